"""The elastic deformation and the training target on the training device (torch in, torch out).

With `train.augment.elastic_on: device` the data loader hands over tiles
augmented but not deformed (input size, instance labels numbered 1..n per
tile) with each tile's displacement field. Here they are resampled with
`grid_sample` (image and weights bilinearly, labels by nearest neighbour,
mirrored at the border, as `augment.warp` does on the CPU), the target is
made from the deformed labels (touching instances split, as
`cells.cell_mask`), and target and weights are cropped to the network's
output. On a GPU this takes the costliest augmentation off the CPU loader.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def warp(sections: torch.Tensor, field: torch.Tensor, nearest: bool) -> torch.Tensor:
    """(n, y, x) sections resampled at position + displacement (`field`: (n, 2, y, x) in pixels, y first),
    mirrored outside; float32."""
    _, height, width = sections.shape
    y = torch.arange(height, device=sections.device, dtype=torch.float32)[None, :, None] + field[:, 0]
    x = torch.arange(width, device=sections.device, dtype=torch.float32)[None, None, :] + field[:, 1]
    grid = torch.stack([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)  # x first, in [-1, 1]
    return F.grid_sample(sections[:, None].float(), grid, mode="nearest" if nearest else "bilinear",
                         padding_mode="reflection", align_corners=True)[:, 0]


def cell_mask(labels: torch.Tensor, axes: int) -> torch.Tensor:
    """Foreground without the voxels where two instances of different id touch, along the last `axes` axes."""
    touching = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    for axis in range(labels.ndim - axes, labels.ndim):
        size = labels.shape[axis]
        first, second = labels.narrow(axis, 0, size - 1), labels.narrow(axis, 1, size - 1)
        differ = (first != second) & (first > 0) & (second > 0)
        touching.narrow(axis, 0, size - 1).logical_or_(differ)
        touching.narrow(axis, 1, size - 1).logical_or_(differ)
    return (labels > 0) & ~touching


def finish_batch(image: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, fields: torch.Tensor,
                 margin: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, target, weight) of a batch from the loader's undeformed one: image (b, 1, [z,] y, x), labels
    and weights (b, [z,] y, x), fields (b, 2, y, x), each section of a tile deformed by the tile's field;
    target and weights cropped by `margin` (the network's halo) on every model axis."""
    spatial = labels.shape[1:]
    per_tile = labels[0].numel() // (spatial[-2] * spatial[-1])  # sections per tile (1 for a 2D model)
    field = fields.float().repeat_interleave(per_tile, dim=0)

    def deformed(values: torch.Tensor, nearest: bool) -> torch.Tensor:
        return warp(values.reshape(-1, *spatial[-2:]), field, nearest).reshape(values.shape)

    image = deformed(image[:, 0], False)[:, None]
    target = cell_mask(deformed(labels, True).round().long(), len(spatial)).long()
    inner = (slice(None), *(slice(margin, n - margin) for n in spatial))
    return image, target[inner], deformed(weights, False)[inner]
