"""Which images calibrate INT8: normal (defect-free) ones, chosen reproducibly.

INT8 ranges are set by what the calibration images excite. Calibrating on defects would
stretch the ranges towards what should look anomalous and blunt the detector, so defective
folders are refused unless forced. NVIDIA's guideline of about 500 images is the default;
fewer than 100 is allowed with a warning.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np

from destseg.datasets import DatasetError, good_images
from destseg.images import read_rgb
from destseg.preprocess import frame_to_input

DEFAULT_COUNT = 500
MIN_RECOMMENDED = 100
# Normal images above the run's FP32 image threshold: a few are false alarms, more mean defects.
MAX_ABOVE_THRESHOLD = 3
MAX_ABOVE_FRACTION = 0.05


class CalibrationError(ValueError):
    """Calibration images that would give an untrustworthy INT8 model."""


def looks_defective(folder: Path) -> bool:
    """An MVTec test folder of a defect type, or a folder that has ground-truth masks."""
    folder = folder.resolve()
    if folder.parent.name == "test" and folder.name != "good":
        return True
    if folder.name == "test" and any(p.is_dir() and p.name != "good" for p in folder.iterdir()):
        return True
    if (folder.parent.parent / "ground_truth" / folder.name).is_dir() and folder.name != "good":
        return True
    return any(folder.glob("*_mask.png"))


def select_images(
    source: str | os.PathLike,
    category: Optional[str] = None,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    force: bool = False,
) -> List[Path]:
    """``count`` images from a folder (or ROOT/CATEGORY/train/good), sampled with ``seed``."""
    source = Path(source)
    if not force and not category and source.is_dir() and looks_defective(source):
        raise CalibrationError(
            f"{source} looks like defective test images; calibrate on normal images "
            f"(e.g. the train/good split) or pass --force-calib if it really holds good parts"
        )
    try:
        paths = good_images(source, category)
    except DatasetError as exc:
        raise CalibrationError(str(exc)) from exc
    if count < len(paths):
        order = np.random.default_rng(seed).permutation(len(paths))[:count]
        paths = [paths[i] for i in sorted(order)]
    if len(paths) < MIN_RECOMMENDED:
        warnings.warn(
            f"calibrating on only {len(paths)} images (recommended: {MIN_RECOMMENDED}-{DEFAULT_COUNT}); "
            f"INT8 ranges may miss the brightest and darkest normal parts and raise false alarms",
            stacklevel=2,
        )
    return paths


def check_scores(scores: np.ndarray, threshold: float, force: bool = False) -> None:
    """Refuse (or, forced, warn about) calibration images the FP32 model itself calls defective.

    The folder check above only knows MVTec's layout; this looks at the images: more than a
    few scoring at or above the run's image threshold means the set is not normal parts.
    """
    above = int(np.sum(~(scores < threshold)))  # NaN counts as above
    if above <= max(MAX_ABOVE_THRESHOLD, MAX_ABOVE_FRACTION * len(scores)):
        return
    message = (f"{above} of {len(scores)} calibration images score at or above the run's FP32 image threshold "
               f"{threshold:.4f}: they look defective")
    if not force:
        raise CalibrationError(f"{message}; calibrate on normal images, or pass --force-calib if they are good parts")
    warnings.warn(f"{message}; calibrating on them anyway (--force-calib)", stacklevel=2)


def batches(paths: List[Path], size: int, batch_size: int = 1) -> Iterator[np.ndarray]:
    """N x S x S x 3 uint8 batches, preprocessed exactly as the runtime does for files."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        yield np.stack([frame_to_input(read_rgb(p), size) for p in chunk])
