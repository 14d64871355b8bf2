"""Models in and out: bioimage.io model packages (format 0.5) of this package's U-Nets."""
