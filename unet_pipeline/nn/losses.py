"""Training losses (torch in, torch out): the paper's weighted pixel-wise cross-entropy and a soft Dice term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy, each pixel scaled by its weight, averaged over the annotated pixels
    (weight > 0; a weight of 0 marks a pixel without annotation). With every pixel annotated the factor is
    exactly 1: the plain mean."""
    annotated = (weight > 0).sum().clamp(min=1)
    return (F.cross_entropy(logits, target, reduction="none") * weight).mean() * (weight.numel() / annotated)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the cell class over the annotated pixels (weight > 0)."""
    annotated = (weight > 0).float()
    cell = torch.softmax(logits, dim=1)[:, 1] * annotated
    truth = target.float() * annotated
    return 1 - (2 * (cell * truth).sum() + 1) / (cell.sum() + truth.sum() + 1)
