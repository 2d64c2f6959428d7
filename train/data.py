"""The training stream: good images, each corrupted by a synthetic anomaly.

Sample number ``n`` (step * batch + slot) fully determines which image is drawn and how it
is corrupted, so a run is reproducible under ``--seed`` whatever the worker count, and
``--resume`` continues the exact stream. Images are drawn epoch by epoch from a seeded
permutation; a dataset smaller than the batch simply repeats images within a batch (the
authors' code loops forever there).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from destseg.images import read_rgb, resize_square
from destseg.preprocess import normalize
from destseg.train.anomaly import AnomalySynthesizer


def to_tensor(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """S x S x 3 float in [0, 1] to a normalised 3 x S x S tensor (:func:`destseg.preprocess.normalize`)."""
    return torch.from_numpy(normalize(img, mean, std))


class SyntheticAnomalyStream(Dataset):
    """Map-style dataset indexed by global sample number; use with :class:`SampleRange`."""

    def __init__(
        self,
        paths: List[Path],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int,
        category: Optional[str] = None,
        dtd_dir: Optional[str] = None,
    ) -> None:
        self.paths = paths
        self.image_size = image_size
        self.mean, self.std, self.seed = mean, std, seed
        self.synthesizer = AnomalySynthesizer(image_size, category=category, dtd_dir=dtd_dir)

    def __len__(self) -> int:  # the stream is unbounded; the sampler says which numbers to draw
        return 2**62

    def image_index(self, n: int) -> int:
        epoch, pos = divmod(n, len(self.paths))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.paths))
        return int(order[pos])

    def __getitem__(self, n: int) -> Dict[str, torch.Tensor]:
        rgb = resize_square(read_rgb(self.paths[self.image_index(n)]), self.image_size)
        rng = np.random.default_rng([self.seed, 1, n])
        clean, augmented, mask = self.synthesizer(rgb, rng)
        return {
            "clean": to_tensor(clean, self.mean, self.std),
            "augmented": to_tensor(augmented, self.mean, self.std),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
        }


class SampleRange(torch.utils.data.Sampler):
    """Global sample numbers [start, stop) in order: the whole schedule of one training step."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
