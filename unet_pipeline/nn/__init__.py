"""The network as array code (torch and numpy): the U-Net and its config, checkpoints, losses, augmentation,
mirroring and in-memory inference. Imports `core` only: no storage, scheduler or stage.
`model_config` imports no torch (the workflow reads it).
"""
