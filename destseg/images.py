"""Reading images the way every stage needs them: 8-bit RGB, whatever is on disk.

Factory photos come as grayscale, RGBA, 16-bit PNG or TIFF; the model wants uint8 RGB.
Unreadable files are skipped by the callers that list folders, with one warning each.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, List

import cv2
import numpy as np

from destseg.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An image file that cannot be decoded."""


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Convert a decoded array (gray, gray+alpha, BGR, BGRA; 8 or 16 bit) to uint8 RGB."""
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0 if img.max() <= 1.0 else img, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 2:
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read any common image file as H x W x 3 uint8 RGB, or raise ImageError."""
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageError(f"cannot decode image {path}")
    return to_rgb8(img)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a ground-truth mask as H x W uint8 (0 or 255 as stored; callers binarise)."""
    img = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ImageError(f"cannot decode mask {path}")
    return img


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB (or single-channel) uint8 image; the format follows the suffix."""
    path = Path(path)
    arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(path.suffix or ".png", arr)
    if not ok:
        raise ImageError(f"cannot encode image for {path}")
    with atomic_path(path) as tmp:
        buf.tofile(str(tmp))


def list_images(folder: str | os.PathLike) -> List[Path]:
    """Image files directly in ``folder``, sorted, by suffix."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def readable(paths: Iterable[Path]) -> List[Path]:
    """Keep the paths that decode; warn once per unreadable file and once with the count."""
    good: List[Path] = []
    bad = 0
    for p in paths:
        data = np.fromfile(str(p), dtype=np.uint8)
        if data.size and cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is not None:
            good.append(p)
        else:
            bad += 1
            warnings.warn(f"skipping unreadable image {p}", stacklevel=2)
    if bad:
        warnings.warn(f"skipped {bad} unreadable image(s)", stacklevel=2)
    return good


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size with area interpolation when shrinking, as the runtime's scaler does."""
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb
    interp = cv2.INTER_AREA if h > size or w > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)
