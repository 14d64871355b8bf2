"""Data on disk: OME-Zarr images and their pyramids, the sources users bring, N5 datasets read in place, chunk
presence and checked reads, chunk hashes, tensorstore I/O, provenance, tables, output locks and the atomic
commit. Imports `core` only.
"""
