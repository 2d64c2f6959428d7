"""The two training objectives of DeSTSeg (spec: Training)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from destseg.train.model import l2_normalize


def cosine_distance_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Step 1: per level, the pixel mean of 1 - cos(S, T), summed over levels."""
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher):
        total = total + (1.0 - (l2_normalize(s) * l2_normalize(t)).sum(dim=1)).mean()
    return total


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """Binary focal loss on the sigmoid output, no alpha, mean; computed from logits for stability."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    return ((1.0 - p_t) ** gamma * bce).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Step 2: focal loss plus L1 between the sigmoid output and the binary mask."""
    return focal_loss(logits, target) + (torch.sigmoid(logits) - target).abs().mean()


def mask_target(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The full-size N x 1 x S x S mask downsampled bilinearly to the logits' size, re-binarised at 0.5."""
    small = F.interpolate(mask, size=tuple(size), mode="bilinear", align_corners=False)
    return (small > 0.5).to(mask.dtype)
