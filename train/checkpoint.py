"""The training run folder: the file interface between training and every later stage.

``RUN/model.safetensors`` (weights; safetensors never unpickles) and ``RUN/config.json``
(everything needed to rebuild the model and its preprocessing, the progress the weights
hold, and their sha256, which every reader checks). While training, each checkpoint is one
generation: ``RUN/checkpoints/PHASE-STEP/`` holds weights, config and the optimiser state
(``trainer_state.pt``, loaded with ``weights_only=True``), all written before
``RUN/checkpoint.json`` is atomically pointed at it. A Ctrl-C at any moment leaves the last
committed generation whole, so ``--resume`` never mixes two steps. The run's top-level
files are published from the generation after each commit; a finished run keeps only them.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from destseg.atomic import atomic_dir, atomic_path, write_json
from destseg.bundle import sha256_file
from destseg.train.model import BACKBONES, SEG_HEAD, SEG_HEADS, SEG_WIDTH, TOP_K, DeSTSeg

RUN_SCHEMA = "destseg-run/1"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.pt"
POINTER_FILE = "checkpoint.json"  # names the last committed generation while training
GENERATIONS_DIR = "checkpoints"
RUN_FILES = (MODEL_FILE, CONFIG_FILE, STATE_FILE, POINTER_FILE, GENERATIONS_DIR)  # what training writes in RUN


class RunError(ValueError):
    """A run folder that is missing, incomplete, damaged or from another version."""


def read_config(run_dir: str | os.PathLike) -> Dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a training run: {CONFIG_FILE} is missing; train one with destseg-train --out {run_dir}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); restore it from a backup or retrain the run") from exc
    if not isinstance(config, dict) or config.get("schema") != RUN_SCHEMA:
        schema = config.get("schema") if isinstance(config, dict) else None
        raise RunError(f"{path} has schema {schema!r}, expected {RUN_SCHEMA!r}; retrain with this version")
    return config


def update_config(run_dir: str | os.PathLike, **changes: Any) -> Dict[str, Any]:
    """Read-modify-write config.json atomically (evaluation adds thresholds this way)."""
    config = read_config(run_dir)
    config.update(changes)
    write_json(Path(run_dir) / CONFIG_FILE, config)
    return config


def _link_or_copy(src: Path, dst: Path) -> None:
    """Publish ``src`` at ``dst`` atomically, sharing its blocks where the file system can."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: DeSTSeg,
    config: Dict[str, Any],
    progress: Dict[str, Any],
    trainer_state: Optional[Dict[str, Any]] = None,
) -> None:
    """Commit one generation (weights, config with their sha256, optimiser state), then publish it.

    The pointer file is the commit: until it names the new generation, the previous one is
    what ``--resume`` reads, whole. A finished run (phase "done") keeps no generations.
    """
    run_dir = Path(run_dir)
    generations = run_dir / GENERATIONS_DIR
    name = f"{progress['phase']}-{int(progress['step']):07d}"
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(generations / name) as tmp:
        if trainer_state is not None:
            torch.save(dict(trainer_state, progress=progress), tmp / STATE_FILE)
        save_file(state, str(tmp / MODEL_FILE), metadata={"step": str(progress["step"]), "phase": progress["phase"]})
        full = dict(config, schema=RUN_SCHEMA, progress=progress, weights_sha256=sha256_file(tmp / MODEL_FILE))
        write_json(tmp / CONFIG_FILE, full)
    write_json(run_dir / POINTER_FILE, {"generation": f"{GENERATIONS_DIR}/{name}", "progress": progress})
    _link_or_copy(generations / name / MODEL_FILE, run_dir / MODEL_FILE)
    write_json(run_dir / CONFIG_FILE, full)
    if progress["phase"] == "done":
        (run_dir / POINTER_FILE).unlink()
        shutil.rmtree(generations)
        (run_dir / STATE_FILE).unlink(missing_ok=True)  # a run trained before generations kept it here
        return
    for old in generations.iterdir():
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def last_checkpoint(run_dir: str | os.PathLike) -> Optional[Path]:
    """The folder ``--resume`` continues from: the committed generation, else (runs from before
    generations, finished runs) the run folder itself; None when there is no checkpoint."""
    run_dir = Path(run_dir)
    pointer = run_dir / POINTER_FILE
    if pointer.is_file():
        try:
            folder = run_dir / json.loads(pointer.read_text())["generation"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RunError(f"{pointer} is damaged ({exc}); restore it or start again with --overwrite") from exc
        if not (folder / MODEL_FILE).is_file():
            raise RunError(f"{pointer} names {folder}, which is missing; restore it or start again with --overwrite")
        return folder
    return run_dir if (run_dir / MODEL_FILE).is_file() and (run_dir / CONFIG_FILE).is_file() else None


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
    head = config.get("seg_head", SEG_HEAD)  # runs from before the light head had the paper's
    if head not in SEG_HEADS:
        raise RunError(f"config.json names segmentation head {head!r}, which this version does not know "
                       f"({', '.join(SEG_HEADS)}); retrain the run with this version")
    return DeSTSeg(backbone, config.get("seg_width", SEG_WIDTH), config.get("top_k", TOP_K), head)


def describe_progress(progress: Dict[str, Any]) -> str:
    phase, step = progress.get("phase"), progress.get("step")
    return {"student": f"step 1 (student), iteration {step}", "segmentation": f"step 2 (segmentation), iteration {step}",
            "done": "finished"}.get(phase, f"{phase}, iteration {step}")


def check_weights(run_dir: str | os.PathLike, config: Dict[str, Any]) -> Path:
    """The weights file, present and matching the sha256 its config.json recorded (runs from
    before that record are only checked by safetensors itself)."""
    weights = Path(run_dir) / MODEL_FILE
    if not weights.is_file():
        raise RunError(f"{weights} is missing; the run has no checkpoint yet")
    expected = config.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise RunError(f"{weights} is damaged: its sha256 differs from the one in {CONFIG_FILE}; "
                       "restore it from a copy of the run, or retrain")
    return weights


def load_run(run_dir: str | os.PathLike, device: str = "cpu", allow_unfinished: bool = False) -> Tuple[DeSTSeg, Dict[str, Any]]:
    """Rebuild the model of a run, in eval mode, on ``device``.

    A run whose training has not finished is refused unless ``allow_unfinished``: its
    weights are a half-trained model that would evaluate and export without complaint.
    """
    config = read_config(run_dir)
    progress = config.get("progress", {"phase": "done"})
    if not allow_unfinished and progress.get("phase") != "done":
        raise RunError(f"{run_dir} is unfinished: training stopped in {describe_progress(progress)}; "
                       f"continue it with destseg-train --resume --out {run_dir} --data ..., or pass --allow-unfinished")
    weights = check_weights(run_dir, config)
    model = build_model(config)
    try:
        model.load_state_dict(load_file(str(weights), device="cpu"))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise RunError(f"{weights} is damaged or not this run's model ({str(exc).splitlines()[0]}); "
                       "restore it from a copy of the run, or retrain") from exc
    return model.to(device).eval(), config


def load_trainer_state(run_dir: str | os.PathLike) -> Optional[Dict[str, Any]]:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    return torch.load(str(path), map_location="cpu", weights_only=True)


def weights_sha256(run_dir: str | os.PathLike) -> str:
    return sha256_file(Path(run_dir) / MODEL_FILE)
