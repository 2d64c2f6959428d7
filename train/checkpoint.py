"""The training run folder: the file interface between training and every later stage.

``RUN/model.safetensors`` (weights; safetensors never unpickles), ``RUN/config.json``
(everything needed to rebuild the model and its preprocessing) and, while training,
``RUN/trainer_state.pt`` (optimiser state, loaded with ``weights_only=True``). Each file is
written atomically, so an interrupted run keeps its last good checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

from destseg.atomic import atomic_path, write_json
from destseg.bundle import sha256_file
from destseg.train.model import BACKBONES, SEG_WIDTH, TOP_K, DeSTSeg

RUN_SCHEMA = "destseg-run/1"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.pt"


class RunError(ValueError):
    """A run folder that is missing, incomplete or from another version."""


def read_config(run_dir: str | os.PathLike) -> Dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a training run: {CONFIG_FILE} is missing; train one with destseg-train --out {run_dir}")
    config = json.loads(path.read_text())
    if config.get("schema") != RUN_SCHEMA:
        raise RunError(f"{path} has schema {config.get('schema')!r}, expected {RUN_SCHEMA!r}; retrain with this version")
    return config


def update_config(run_dir: str | os.PathLike, **changes: Any) -> Dict[str, Any]:
    """Read-modify-write config.json atomically (evaluation adds thresholds this way)."""
    config = read_config(run_dir)
    config.update(changes)
    write_json(Path(run_dir) / CONFIG_FILE, config)
    return config


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: DeSTSeg,
    config: Dict[str, Any],
    progress: Dict[str, Any],
    trainer_state: Optional[Dict[str, Any]] = None,
) -> None:
    """Write optimiser state, weights, then config (which points at the step they hold)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if trainer_state is not None:
        with atomic_path(run_dir / STATE_FILE) as tmp:
            torch.save(dict(trainer_state, progress=progress), tmp)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(run_dir / MODEL_FILE) as tmp:
        save_file(state, str(tmp), metadata={"step": str(progress["step"]), "phase": progress["phase"]})
    write_json(run_dir / CONFIG_FILE, dict(config, schema=RUN_SCHEMA, progress=progress))


# Runs written before config.json recorded the teacher's architecture used these.
_LEGACY_ARCH = {"resnet18": "torchvision.resnet18", "efficientnet_lite0": "timm.efficientnet_lite0"}


def build_model(config: Dict[str, Any]) -> DeSTSeg:
    """The untrained network a run's config.json describes (the one place a config becomes a model)."""
    backbone = config["backbone"]
    if backbone not in BACKBONES:
        raise RunError(f"config.json names backbone {backbone!r}, which this version does not know ({', '.join(BACKBONES)})")
    arch = config.get("teacher_arch", _LEGACY_ARCH.get(backbone))
    if arch != BACKBONES[backbone].arch:
        raise RunError(f"this run's teacher is {arch}, but this version builds {BACKBONES[backbone].arch} "
                       f"(the packaged weights need it); retrain the run with this version")
    return DeSTSeg(backbone, config.get("seg_width", SEG_WIDTH), config.get("top_k", TOP_K))


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> Tuple[DeSTSeg, Dict[str, Any]]:
    """Rebuild the model of a run, in eval mode, on ``device``."""
    config = read_config(run_dir)
    weights = Path(run_dir) / MODEL_FILE
    if not weights.is_file():
        raise RunError(f"{weights} is missing; the run has no checkpoint yet")
    model = build_model(config)
    model.load_state_dict(load_file(str(weights), device="cpu"))
    return model.to(device).eval(), config


def load_trainer_state(run_dir: str | os.PathLike) -> Optional[Dict[str, Any]]:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    return torch.load(str(path), map_location="cpu", weights_only=True)


def weights_sha256(run_dir: str | os.PathLike) -> str:
    return sha256_file(Path(run_dir) / MODEL_FILE)
