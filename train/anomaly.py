"""Synthetic anomalies for training (spec: "Anomaly synthesis").

Every training image is (1) rotated the way its MVTec category tolerates, which is also
the clean target, and (2) corrupted by pasting foreign texture through a Perlin mask:
``I_a = I*(1-M) + (1-beta)*D*M + beta*I*M`` with ``beta = 0.8*U[0,1)``. The texture D is a
random DTD image when a DTD folder is given, otherwise a procedural texture
(:mod:`destseg.train.textures`). The mask may come out empty; the sample is still used,
as in the authors' code, so the model also learns that normal images are normal.

Everything random comes from the generator passed per call, so the training stream is
reproducible sample by sample, whatever the number of loader workers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from destseg.images import list_images, read_rgb, resize_square
from destseg.train.perlin import perlin_mask
from destseg.train.textures import random_texture

FILL_RGB = (114, 114, 114)
NO_ROTATION = frozenset({"capsule", "metal_nut", "pill", "toothbrush", "transistor"})
SMALL_ROTATION = frozenset({"wood", "zipper", "cable"})
QUARTER_TURNS_THEN_SMALL = frozenset({"bottle", "grid", "hazelnut", "leather", "tile", "carpet", "screw"})
SMALL_ROTATION_DEG = 5.0
MAX_BETA = 0.8


class TextureSourceError(ValueError):
    """The DTD folder given for anomaly textures is missing, empty or unreadable."""


def dtd_images(dtd_dir: str | os.PathLike) -> List[Path]:
    """The DTD images, DIR/images/<class>/*.jpg (any common image suffix), sorted; or raise."""
    images_dir = Path(dtd_dir) / "images"
    classes = sorted(p for p in images_dir.iterdir() if p.is_dir()) if images_dir.is_dir() else []
    paths = [img for cls in classes for img in list_images(cls)]
    if not paths:
        raise TextureSourceError(
            f"no DTD images in {images_dir}/<class>/*.jpg; unpack the Describable Textures Dataset there "
            "or omit --dtd to use procedural textures"
        )
    return paths


def rotate_for_category(rgb: np.ndarray, category: Optional[str], rng: np.random.Generator) -> np.ndarray:
    """The per-category rotation of the spec, fill (114, 114, 114); unknown categories are not rotated."""
    if category in QUARTER_TURNS_THEN_SMALL:
        angle = 90.0 * int(rng.integers(0, 4)) + rng.uniform(-SMALL_ROTATION_DEG, SMALL_ROTATION_DEG)
    elif category in SMALL_ROTATION:
        angle = rng.uniform(-SMALL_ROTATION_DEG, SMALL_ROTATION_DEG)
    else:
        return rgb
    h, w = rgb.shape[:2]
    # One warp for quarter turn and tilt together: about the pixel-grid centre a quarter
    # turn of a square image maps pixels onto pixels, so nothing is resampled twice.
    rotation = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    return cv2.warpAffine(rgb, rotation, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=FILL_RGB)

class AnomalySynthesizer:
    """Turns one good training image into (clean target, augmented input, anomaly mask)."""

    def __init__(self, image_size: int, category: Optional[str] = None, dtd_dir: Optional[str] = None) -> None:
        if image_size < 1:
            raise ValueError(f"image size must be positive, got {image_size}")
        self.image_size = image_size
        self.category = category
        self.dtd_paths: List[Path] = dtd_images(dtd_dir) if dtd_dir is not None else []

    def texture(self, rng: np.random.Generator) -> np.ndarray:
        """S x S x 3 uint8 RGB texture: a random DTD image, or a procedural one."""
        if not self.dtd_paths:
            return random_texture(self.image_size, rng)
        path = self.dtd_paths[int(rng.integers(len(self.dtd_paths)))]
        try:
            return resize_square(read_rgb(path), self.image_size)
        except ValueError as exc:
            raise TextureSourceError(f"{exc}; delete or replace that file in the DTD folder") from None

    def __call__(self, rgb: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """rgb: S x S x 3 uint8 -> (clean float32 S x S x 3 in [0, 1], augmented float32 S x S x 3
        in [0, 1], mask float32 S x S in {0, 1})."""
        size = self.image_size
        if rgb.shape != (size, size, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected a {size} x {size} x 3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        clean = rotate_for_category(rgb, self.category, rng).astype(np.float32)
        clean *= np.float32(1.0 / 255.0)
        augmented = self.texture(rng).astype(np.float32)
        augmented *= np.float32(1.0 / 255.0)
        mask = perlin_mask(size, rng)
        beta = np.float32(MAX_BETA * rng.random())
        # The spec's blend I*(1-M) + (1-beta)*D*M + beta*I*M, rearranged to I + (1-beta)*M*(D-I)
        # and computed in place: this runs per sample, and fresh full-size temporaries
        # (page faults) would cost more than the arithmetic. Outside the mask it is I exactly.
        weight = mask * (np.float32(1.0) - beta)
        augmented -= clean
        augmented *= cv2.merge([weight, weight, weight])
        augmented += clean
        return clean, augmented, mask
