"""The two training objectives of DeSTSeg (spec: Training)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from destseg.train.model import l2_normalize


def cosine_distance_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Step 1: per level, the sum over the batch of each image's pixel mean of 1 - cos(S, T),
    summed over levels. The sum over the batch is the authors' scale: lr 0.4 is tuned for it,
    and a batch mean would make every step batch-size times smaller. Computed in float32."""
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        cos = (l2_normalize(s.float()) * l2_normalize(t.float())).sum(dim=1)
        total = total + (1.0 - cos).mean(dim=(1, 2)).sum()
    return total


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """Binary focal loss on the sigmoid output, no alpha, mean; computed from logits for stability."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    return ((1.0 - p_t) ** gamma * bce).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Step 2: focal loss plus L1 between the sigmoid output and the binary mask, in float32."""
    logits, target = logits.float(), target.float()
    return focal_loss(logits, target) + (torch.sigmoid(logits) - target).abs().mean()


def mask_target(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The full-size N x 1 x S x S mask downsampled bilinearly to the logits' size, re-binarised
    with >= 0.5: a mask edge lands exactly on 0.5, and > 0.5 would drop 17-31 % of the positives."""
    small = F.interpolate(mask.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return (small >= 0.5).to(torch.float32)
