"""The training objectives as the spec (and the authors' code) define them."""
from __future__ import annotations

import pytest
import torch

from destseg.train.losses import cosine_distance_loss, mask_target, segmentation_loss


def _levels(batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=g) for c, s in ((8, 16), (16, 8), (32, 4))]


def test_step1_loss_of_a_batch_is_the_sum_of_its_images_losses():
    student, teacher = _levels(4, 0), _levels(4, 1)
    whole = cosine_distance_loss(student, teacher)
    parts = [cosine_distance_loss([s[i:i + 1] for s in student], [t[i:i + 1] for t in teacher]) for i in range(4)]
    assert float(whole) == pytest.approx(float(sum(parts)), rel=1e-6)
    assert float(whole) > 3.0  # per image and level about 1 for random features: a sum, not a mean


def test_step1_loss_is_zero_for_identical_features_and_ignores_their_scale():
    student = _levels(2, 0)
    assert float(cosine_distance_loss(student, [3.0 * s for s in student])) == pytest.approx(0.0, abs=1e-5)


def test_a_mask_edge_that_lands_on_one_half_stays_positive():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, :3] = 1.0  # columns 0-2: downsampled x2, column 1 averages one 1 and one 0
    target = mask_target(mask, (4, 4))
    assert target[0, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_losses_are_float32_under_bf16_autocast():
    student = [f.bfloat16() for f in _levels(2, 0)]
    teacher = [f.bfloat16() for f in _levels(2, 1)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss1 = cosine_distance_loss(student, teacher)
        logits = torch.randn(2, 1, 8, 8).bfloat16()
        loss2 = segmentation_loss(logits, (torch.rand(2, 1, 8, 8) > 0.5).float())
    assert loss1.dtype == torch.float32 and loss2.dtype == torch.float32
    exact = cosine_distance_loss([s.float() for s in student], [t.float() for t in teacher])
    assert float(loss1) == pytest.approx(float(exact), rel=1e-6)
