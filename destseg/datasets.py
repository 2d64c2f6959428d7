"""Where the images are: the MVTec-AD layout, or a plain folder of good images.

MVTec-AD layout::

    ROOT/CATEGORY/train/good/*.png
    ROOT/CATEGORY/test/<defect type or good>/*.png
    ROOT/CATEGORY/ground_truth/<defect type>/<name>_mask.png

Only paths are listed here (no decoding beyond a readability check), so training,
evaluation and calibration all see the same files in the same order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from destseg.images import IMAGE_SUFFIXES, list_images, readable


class DatasetError(ValueError):
    """The dataset folder is missing, empty or not in a layout we read."""


@dataclass(frozen=True)
class TestSample:
    image: Path
    defect: str  # "good" or the defect type folder name
    mask: Optional[Path]  # None for good images

    @property
    def is_anomalous(self) -> bool:
        return self.defect != "good"


def _category_dir(root: Path, category: str) -> Path:
    cat = root / category
    if not cat.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        hint = f" (found: {', '.join(have)})" if have else ""
        raise DatasetError(f"no category folder {cat}{hint}; pass --data ROOT --category NAME of an MVTec-AD layout")
    return cat


def good_images(root: str | os.PathLike, category: Optional[str] = None) -> List[Path]:
    """Training (good) images: ROOT/CATEGORY/train/good with a category, else every image under ROOT."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist")
    if category:
        folder = _category_dir(root, category) / "train" / "good"
        if not folder.is_dir():
            raise DatasetError(f"{folder} is missing: an MVTec-AD category needs train/good/")
        paths = list_images(folder)
    else:
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    paths = readable(paths)
    if not paths:
        where = f"{root}/{category}/train/good" if category else str(root)
        raise DatasetError(f"no readable images in {where}; put good (defect-free) images there")
    return paths


def has_test_split(root: str | os.PathLike, category: Optional[str]) -> bool:
    return bool(category) and (Path(root) / category / "test").is_dir()


def test_samples(root: str | os.PathLike, category: str) -> List[TestSample]:
    """Test images with their defect type and mask path (good images have none)."""
    cat = _category_dir(Path(root), category)
    test_dir = cat / "test"
    if not test_dir.is_dir():
        raise DatasetError(f"{test_dir} is missing: evaluation needs the MVTec-AD test split")
    samples: List[TestSample] = []
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for img in readable(list_images(defect_dir)):
            mask = None
            if defect != "good":
                mask = cat / "ground_truth" / defect / f"{img.stem}_mask.png"
                if not mask.is_file():
                    raise DatasetError(f"missing ground-truth mask {mask} for {img}")
            samples.append(TestSample(img, defect, mask))
    if not samples:
        raise DatasetError(f"no readable test images under {test_dir}")
    return samples


def load_test_set(root: str | os.PathLike, category: str, size: int):
    """The evaluation protocol's inputs at ``size``: (uint8 images N x S x S x 3, labels N, masks N x S x S bool).

    Masks are resized with area interpolation (antialiased bilinear when shrinking) and
    binarised at 0.5; an image is anomalous iff its mask has a positive pixel (spec: Evaluation).
    """
    import cv2
    import numpy as np

    from destseg.images import read_mask, read_rgb
    from destseg.preprocess import frame_to_input

    samples = test_samples(root, category)
    images = np.stack([frame_to_input(read_rgb(s.image), size) for s in samples])
    masks = np.zeros((len(samples), size, size), dtype=bool)
    for i, s in enumerate(samples):
        if s.mask is not None:
            m = read_mask(s.mask).astype(np.float32) / 255.0
            interp = cv2.INTER_AREA if m.shape[0] > size else cv2.INTER_LINEAR
            masks[i] = cv2.resize(m, (size, size), interpolation=interp) > 0.5
    labels = masks.reshape(len(samples), -1).any(axis=1).astype(np.int64)
    return images, labels, masks
