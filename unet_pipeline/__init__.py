"""unet-pipeline: U-Net segmentation of large EM volumes with Snakemake, Dask and Zarr."""

__version__ = "0.1.0"
