"""The one preprocessing function shared by calibration, evaluation and the runtime.

The fused graph takes N x S x S x 3 uint8 RGB and normalises inside, so what happens
outside the graph is only decoding and scaling. GStreamer does the scaling on the live
path (videoscale / nvvidconv); files go through :func:`frame_to_input`, which matches it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from destseg.images import resize_square

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frame_to_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """An H x W x 3 uint8 RGB frame as the model's S x S x 3 uint8 input."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB frame, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(resize_square(rgb, size))


def normalize(batch_uint8: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """N x S x S x 3 uint8 to N x 3 x S x S float32, normalised (what the fused graph does first).

    Pass the run's or bundle's mean/std: the EfficientNet-Lite teacher uses 0.5/0.5.
    """
    x = batch_uint8.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return (x - m) / s
