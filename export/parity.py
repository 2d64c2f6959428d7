"""Does the exported graph compute what the trained model computes? ONNX Runtime vs PyTorch.

The reference is the run's own ``model.predict`` on a batch normalised outside any graph
(:func:`destseg.preprocess.normalize`, with the run's mean/std), not the fused module, so the
check also covers the in-graph cast, transpose and normalisation. The graph runs in the
session every stage opens models with (:func:`destseg.inference.onnx_session`).
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from destseg.export.fused import INPUT_LAYOUTS
from destseg.inference import onnx_session
from destseg.preprocess import model_input, normalize
from destseg.train.model import DeSTSeg

PARITY_TOLERANCE = 1e-4


class ParityError(ValueError):
    """The ONNX graph's outputs differ from PyTorch's by more than the tolerance."""


def random_frames(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """N x S x S x 3 uint8 noise: every pixel value and channel exercised, deterministically."""
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def torch_outputs(model: DeSTSeg, config: dict, frames: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model.eval().predict(torch.from_numpy(normalize(frames, config["mean"], config["std"])))
    return out["anomaly_map"].numpy(), out["score"].numpy()


def onnx_outputs(session, frames: np.ndarray, config: dict, input_format: str = "uint8-nhwc") -> Tuple[np.ndarray, np.ndarray]:
    feed = model_input(frames, INPUT_LAYOUTS[input_format], config["mean"], config["std"])
    anomaly_map, score = session.run(["anomaly_map", "score"], {session.get_inputs()[0].name: feed})
    return anomaly_map, score


def check_parity(model: DeSTSeg, config: dict, onnx_path: str | os.PathLike, batches: Sequence[int],
                 input_format: str = "uint8-nhwc", tolerance: float = PARITY_TOLERANCE, seed: int = 0) -> List[Dict[str, float]]:
    """Max abs differences of map and score on a noise batch per batch size; ParityError above ``tolerance``."""
    session = onnx_session(onnx_path)
    results = []
    for batch in batches:
        frames = random_frames(batch, int(config["image_size"]), seed)
        ref_map, ref_score = torch_outputs(model, config, frames)
        got_map, got_score = onnx_outputs(session, frames, config, input_format)
        if got_map.shape != ref_map.shape or got_score.shape != ref_score.shape:
            raise ParityError(f"ONNX output shapes {got_map.shape}, {got_score.shape} differ from PyTorch's {ref_map.shape}, {ref_score.shape}")
        result = {
            "batch": batch,
            "max_abs_map": float(np.abs(got_map - ref_map).max()),
            "max_abs_score": float(np.abs(got_score - ref_score).max()),
            "tolerance": tolerance,
        }
        worst = max(result["max_abs_map"], result["max_abs_score"])
        if worst > tolerance:
            raise ParityError(
                f"ONNX Runtime differs from PyTorch by {worst:.2e} (map {result['max_abs_map']:.2e}, score "
                f"{result['max_abs_score']:.2e}) at batch {batch}, above {tolerance:.0e}; try another --opset or --no-simplify"
            )
        results.append(result)
    return results
