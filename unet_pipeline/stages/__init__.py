"""One module per `unet-pipeline` subcommand (a stage of the chain, or `verify`): each a function of input and
output paths and keyword settings. Imports every layer below, but no other stage.
"""
