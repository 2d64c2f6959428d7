"""Does the exported graph compute what the trained model computes? ONNX Runtime vs PyTorch.

The reference is the run's own ``model.predict`` on a batch normalised here in torch with
the run's mean/std, not the fused module, so the check also covers the in-graph cast,
transpose and normalisation.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from destseg.train.model import DeSTSeg

PARITY_TOLERANCE = 1e-4


class ParityError(ValueError):
    """The ONNX graph's outputs differ from PyTorch's by more than the tolerance."""


def random_frames(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """N x S x S x 3 uint8 noise: every pixel value and channel exercised, deterministically."""
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def normalized(frames: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(frames).to(torch.float32).permute(0, 3, 1, 2) / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def torch_outputs(model: DeSTSeg, config: dict, frames: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model.eval().predict(normalized(frames, config["mean"], config["std"]))
    return out["anomaly_map"].numpy(), out["score"].numpy()


def onnx_session(onnx_path: str | os.PathLike):
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def onnx_outputs(session, frames: np.ndarray, config: dict, input_format: str = "uint8-nhwc") -> Tuple[np.ndarray, np.ndarray]:
    feed = frames if input_format == "uint8-nhwc" else normalized(frames, config["mean"], config["std"]).numpy()
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
