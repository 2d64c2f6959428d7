"""2-D Perlin (gradient) noise and the anomaly mask DeSTSeg thresholds out of it.

The mask follows the spec (section "Anomaly synthesis") and the DRAEM recipe it comes
from: noise with 2^a x 2^b lattice cells, a and b drawn from {0..5}, rotated by a random
angle in [-90, 90] degrees (zero fill), thresholded at 0.5. Low scales give a few large
blobs, high scales many small speckles, so the student sees anomalies of every size.
Everything is vectorised numpy on float32: the training loop calls this once per sample.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

MAX_SCALE_EXPONENT = 5  # a, b in {0..5}: up to 32 lattice cells along an axis
MASK_THRESHOLD = 0.5
MAX_ROTATION_DEG = 90.0


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic 6t^5 - 15t^4 + 10t^3: zero first and second derivative at the lattice."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: Tuple[int, int], res: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """H x W float32 Perlin noise with ``res`` = (cells along y, cells along x), roughly in [-1, 1].

    Pixel i sits at lattice coordinate i * res / size (as in DRAEM), so any size works, not
    only multiples of the cell count. Gradients are random unit vectors, one per lattice point.
    """
    h, w = shape
    ry, rx = res
    angles = (2.0 * np.pi) * rng.random((ry + 1, rx + 1))
    grad_y = np.sin(angles).astype(np.float32)
    grad_x = np.cos(angles).astype(np.float32)

    y = np.arange(h, dtype=np.float32) * (ry / h)
    x = np.arange(w, dtype=np.float32) * (rx / w)
    iy, ix = y.astype(np.intp), x.astype(np.intp)
    fy, fx = y - np.floor(y), x - np.floor(x)

    def corner(dy: int, dx: int) -> np.ndarray:
        # In-place products: this runs per training sample, so temporaries matter.
        dot = grad_x[iy + dy][:, ix + dx]
        dot *= (fx - dx)[None, :]
        part_y = grad_y[iy + dy][:, ix + dx]
        part_y *= (fy - dy)[:, None]
        dot += part_y
        return dot

    def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        b -= a
        b *= t
        b += a
        return b

    top = lerp(corner(0, 0), corner(0, 1), _fade(fx)[None, :])
    bottom = lerp(corner(1, 0), corner(1, 1), _fade(fx)[None, :])
    noise = lerp(top, bottom, _fade(fy)[:, None])
    noise *= np.float32(np.sqrt(2.0))
    return noise

def perlin_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """S x S float32 mask in {0, 1}: rotated Perlin noise above 0.5 (may come out empty)."""
    a, b = rng.integers(0, MAX_SCALE_EXPONENT + 1, size=2)
    noise = perlin_noise((size, size), (2 ** int(a), 2 ** int(b)), rng)
    angle = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)
    rotation = cv2.getRotationMatrix2D(((size - 1) / 2.0, (size - 1) / 2.0), angle, 1.0)
    noise = cv2.warpAffine(noise, rotation, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return (noise > MASK_THRESHOLD).astype(np.float32)
