"""Scheduling on Dask: clusters, the task loop, block grids, blockwise work and per-block records with run
keys, and the merge-threshold tuning that runs blockwise. Imports `core`, `storage`, `segmentation` and `nn`.
"""
