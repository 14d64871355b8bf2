"""Segmentation as array code (numpy in, numpy out): cells of label images, connected components, fragments,
stitching, region graphs, agglomeration, segmentation in memory and the ISBI metrics. Imports `core` only: no
storage, scheduler or stage.
"""
