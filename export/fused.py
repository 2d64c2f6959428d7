"""The deployed graph: camera-ready uint8 frames in, anomaly map and image score out.

Everything between "a scaled RGB frame" and "a verdict" happens in one graph, so every
runtime (ONNX Runtime, TensorRT, a GStreamer appsink callback) hands over the frame as it
comes and cannot get the normalisation wrong: the cast, the NHWC -> NCHW transpose, the
/255 and the backbone's mean/std (:func:`destseg.preprocess.folded_normalization`) run on
the accelerator as the graph's first ops; the rest is the model's own forward.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from destseg.preprocess import folded_normalization
from destseg.train.model import DeSTSeg

# The graph's input formats and the layout destseg.json records for each (destseg.preprocess.model_input).
INPUT_LAYOUTS = {"uint8-nhwc": "NHWC", "float-nchw": "NCHW"}
INPUT_FORMATS = tuple(INPUT_LAYOUTS)


class FusedError(ValueError):
    """An option the fused graph cannot be built with."""


class FusedDeSTSeg(nn.Module):
    """Teacher, student and segmentation network as one inference module.

    ``uint8-nhwc`` (default) takes N x S x S x 3 uint8 RGB; ``float-nchw`` takes the
    already normalised N x 3 x S x S float batch, for callers with their own preprocessing.
    The teacher runs once (the authors' code runs it twice), and the map is resized to the
    fixed S x S so the graph's output shapes are static apart from the batch.
    """

    def __init__(
        self,
        model: DeSTSeg,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        input_format: str = "uint8-nhwc",
    ) -> None:
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise FusedError(f"unknown input format {input_format!r}; choose one of {', '.join(INPUT_FORMATS)}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise FusedError(f"mean and std need three values with std > 0, got {list(mean)} and {list(std)}")
        self.model = model.eval()
        self.image_size = int(image_size)
        self.input_format = input_format
        scale, shift = folded_normalization(mean, std)
        self.register_buffer("scale", torch.from_numpy(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.from_numpy(shift).view(1, 3, 1, 1), persistent=False)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A zero batch of the right dtype and layout (for tracing and engine compilers)."""
        s = self.image_size
        if self.input_format == "uint8-nhwc":
            return torch.zeros(batch, s, s, 3, dtype=torch.uint8, device=self.scale.device)
        return torch.zeros(batch, 3, s, s, dtype=self.scale.dtype, device=self.scale.device)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(anomaly_map N x 1 x S x S in [0, 1], score N), both float32."""
        if self.input_format == "uint8-nhwc":
            x = image.to(self.scale.dtype).permute(0, 3, 1, 2) * self.scale - self.shift
        else:
            x = image
        anomaly_map, score = self.model(x)
        if anomaly_map.dtype != torch.float32:  # a half-precision module still answers in float32
            anomaly_map, score = anomaly_map.float(), score.float()
        return anomaly_map, score


def fused_from_run(model: DeSTSeg, config: dict, input_format: str = "uint8-nhwc") -> FusedDeSTSeg:
    """The fused module for a loaded run, with the normalisation it was trained with."""
    mean = config.get("mean", model.spec.mean)
    std = config.get("std", model.spec.std)
    return FusedDeSTSeg(model, int(config["image_size"]), mean, std, input_format)
