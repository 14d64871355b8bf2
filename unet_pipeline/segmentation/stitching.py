"""Stitch fragments that a block face cut in two (numpy in, numpy out).

A block computes its fragments on its region and context, then keeps its own
region: a fragment that crosses a block face becomes two pieces, one per
block. Each block also keeps the layer just outside each face of its region
as it saw it (its `face_views`, in its own ids; 0 for fragments seen only in
its context). Two touching pieces are one fragment when both blocks say so:
the first block saw the second piece's voxel in its own fragment, and the
second block saw the first piece's voxel in its own. With a context that
covers the fragments' reach, this joins exactly the pieces of the fragments
that a whole-volume computation makes.
"""

from __future__ import annotations

import numpy as np

from .labeling import FACE_CONNECTIVITY

SIDES = (0, 1)  # the face before the region's start and the face after its stop


def face_axes(mode: str) -> tuple[int, ...]:
    """The axes along which blocks touch through fragments: y and x in '2d' (sections are apart), all in '3d'."""
    return (1, 2) if FACE_CONNECTIVITY[mode] == 4 else (0, 1, 2)


def outside_layer(own: tuple[slice, ...], axis: int, side: int, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The slices of the one-voxel layer just outside `own` across a face, within an array of `shape`; None when
    the array does not reach there."""
    index = own[axis].start - 1 if side == 0 else own[axis].stop
    if not 0 <= index < shape[axis]:
        return None
    return (*own[:axis], slice(index, index + 1), *own[axis + 1:])


def face_views(fragments: np.ndarray, own: tuple[slice, ...], own_ids: np.ndarray,
               mode: str) -> dict[str, np.ndarray]:
    """The layers outside each face of `own` in a block's fragments (read with context), in the block's own
    ids (`own_ids[fragment id]`; 0 for fragments seen only in the context)."""
    views = {}
    for axis in face_axes(mode):
        for side in SIDES:
            layer = outside_layer(own, axis, side, fragments.shape)
            if layer is not None:
                views[f"face_{axis}_{side}"] = own_ids[fragments[layer]]
    return views


def stitch_pairs(first: np.ndarray, second: np.ndarray, first_sees: np.ndarray, second_sees: np.ndarray) -> np.ndarray:
    """(n, 2) unique pairs of fragment ids joined across a face.

    `first` and `second` are the ids on the two sides of the face (layers of equal
    shape), `first_sees` the second layer as the first block saw it and
    `second_sees` the first layer as the second block saw it, all in the same id space.
    """
    joined = (first > 0) & (second > 0) & (first_sees == first) & (second_sees == second)
    pairs = np.stack([first[joined], second[joined]], axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)
