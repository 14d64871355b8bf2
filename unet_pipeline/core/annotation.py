"""Sparse annotation: which label value marks the voxels nobody annotated."""

from __future__ import annotations

UNANNOTATED = 2**32 - 1  # the label ingest gives voxels outside a volume's label_mask (labels stored as uint32)


def ignore_label_of(ignore_label: int | None, label_mask: str | None) -> int | None:
    """The label value of unannotated voxels: the volume's `ignore_label`; with a `label_mask` and none set,
    `UNANNOTATED`; None when every voxel is annotated."""
    if ignore_label is not None:
        return ignore_label
    return UNANNOTATED if label_mask else None
