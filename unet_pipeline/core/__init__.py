"""The bottom layer: errors, geometry (boxes, coordinates, U-Net sizes, tile plans), progress lines, the checks of
a stage's settings, and the numeric conventions of intensities and probabilities. Imports no other layer and
no storage, scheduler or network library.
"""
