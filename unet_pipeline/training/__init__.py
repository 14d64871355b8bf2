"""What feeds the training loop: random valid-size tiles read from stored images, augmented in DataLoader
workers. Imports `core`, `storage`, `segmentation` and `nn`; no scheduler, no stage.
"""
