"""Training losses (torch in, torch out): the paper's weighted pixel-wise cross-entropy and a soft Dice term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy, each pixel scaled by its weight, averaged."""
    return (F.cross_entropy(logits, target, reduction="none") * weight).mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the cell class."""
    cell = torch.softmax(logits, dim=1)[:, 1]
    truth = target.float()
    return 1 - (2 * (cell * truth).sum() + 1) / (cell.sum() + truth.sum() + 1)
