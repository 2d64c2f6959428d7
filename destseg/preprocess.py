"""Preprocessing, written once: frames to the model's input, and the mean/std normalisation.

The fused graph takes N x S x S x 3 uint8 RGB and normalises inside, so what happens
outside the graph is only decoding and scaling. GStreamer does the scaling on the live
path (videoscale / nvvidconv); files go through :func:`frame_to_input`, which matches it.
The normalisation itself is :func:`normalize` everywhere outside a graph (training,
evaluation, the torch backend, bundles exported for callers that normalise, the parity
reference) and :func:`folded_normalization` inside the exported graph.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from destseg.images import resize_square

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUTS = ("NHWC", "NCHW")  # uint8 frames as they come / normalised float, channels first


def frame_to_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """An H x W x 3 uint8 RGB frame as the model's S x S x 3 uint8 input."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB frame, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(resize_square(rgb, size))


def normalize(images: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """(N x) S x S x 3 RGB, uint8 or float in [0, 1], to (N x) 3 x S x S float32: (x - mean) / std.

    Pass the run's or bundle's mean/std: the EfficientNet-Lite teacher uses 0.5/0.5.
    """
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x = x / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def folded_normalization(mean: Sequence[float], std: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """(scale, shift), three float32 values each, with ``uint8 * scale - shift`` = :func:`normalize`.

    ``(x / 255 - mean) / std`` folded into one multiply and one subtract, the graph's first ops.
    """
    std_ = np.asarray(std, np.float32)
    return (1.0 / (255.0 * std_)).astype(np.float32), (np.asarray(mean, np.float32) / std_).astype(np.float32)


def model_input(frames: np.ndarray, layout: str, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """N x S x S x 3 uint8 frames as a model with this input ``layout`` takes them.

    "NHWC": as they are (the graph normalises); "NCHW": normalised float with the run's mean/std.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown input layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return frames if layout == "NHWC" else normalize(frames, mean, std)
