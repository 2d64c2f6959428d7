"""PyTorch, straight from a training run: for debugging, and for CPUs without a better path.

It runs the model's own forward (the inference tail the export traces) on frames normalised
by :func:`destseg.preprocess.normalize` with the run's mean/std, the numpy twin of the
exported graph's first ops, so its maps match the bundle's. On CPUs with native bfloat16
(AVX512-BF16 or AMX, from :func:`destseg.cpu.native_bf16`) it runs under bfloat16 autocast,
measured 4.5 x faster than FP32 on such a CPU (the project's measurement); elsewhere bf16 is
emulated and slower, so FP32 is used. Imported only when chosen: ``destseg.runtime`` itself
never imports torch.
"""
from __future__ import annotations

import os
import time
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from destseg.cpu import native_bf16
from destseg.preprocess import normalize
from destseg.runtime.backends import check_batch
from destseg.runtime.errors import BackendError


def resolve_precision(requested: str, native_bf16: bool) -> str:
    """"bf16" or "fp32" for --precision auto|fp32|bf16 (int8 and fp16 are the exported engines' business)."""
    if requested in ("int8", "fp16"):
        raise BackendError(f"the torch backend runs fp32 or bf16, not {requested}; use --precision auto or fp32, or a bundle with --backend onnxruntime|tensorrt")
    if requested == "fp32":
        return "fp32"
    if requested == "bf16" and not native_bf16:
        raise BackendError("this CPU has no native bf16 (AMX or AVX512-BF16): it would be emulated, slower than fp32; use --precision fp32")
    return "bf16" if native_bf16 else "fp32"


class TorchBackend:
    """A training run's model on the CPU."""

    name = "torch"
    variant = None  # a training run, not a bundle variant

    def __init__(self, run_dir: str | os.PathLike, precision: str = "auto", batch_size: int = 1, threads: Optional[int] = None) -> None:
        from destseg.train.checkpoint import load_run

        native = native_bf16()
        self.precision = resolve_precision(precision, native)
        if threads:
            torch.set_num_threads(threads)
        self._model, config = load_run(run_dir, device="cpu", allow_unfinished=True)  # a development tool: says so below
        self._mean, self._std = config.get("mean", self._model.spec.mean), config.get("std", self._model.spec.std)
        self.image_size = int(config["image_size"])
        self.thresholds = config.get("thresholds") or {}
        self.batch_size = batch_size
        why = "native bf16 on this CPU" if native else "no native bf16 on this CPU"
        phase = config.get("progress", {}).get("phase", "done")
        unfinished = "" if phase == "done" else f", UNFINISHED run (stopped in {phase})"
        self.detail = f"run {run_dir}{unfinished} on CPU, {self.precision} ({why}), {torch.get_num_threads()} threads"
        self._timings = {"h2d": 0.0, "infer": 0.0, "d2h": 0.0}

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        check_batch(batch, self.image_size)
        start = time.perf_counter()
        x = torch.from_numpy(normalize(batch, self._mean, self._std))
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            anomaly_map, score = self._model(x)
        self._timings = {"h2d": 0.0, "infer": (time.perf_counter() - start) * 1e3, "d2h": 0.0}
        return anomaly_map.float()[:, 0].numpy(), score.float().numpy()

    def last_timings(self) -> Dict[str, float]:
        return dict(self._timings)

    def close(self) -> None:
        self._model = None
