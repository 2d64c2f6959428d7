"""Before training writes anything: is ``--out`` ours to write, and does ``--resume`` match the run?

Training into a folder that already holds a run would silently replace its checkpoint and
thresholds, and resuming with another backbone or image size would train one model while
config.json describes another. Both stop here with a line that says what to pass.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

from destseg.train.checkpoint import CONFIG_FILE, RUN_FILES, RunError, describe_progress, last_checkpoint, read_config

EVAL_DIR = "eval"  # destseg-eval's default output inside a run: it describes the old model
# Training images this far from --image-size lose or invent detail (factor per side).
MAX_UPSCALE = 2.0
MAX_DOWNSCALE = 8.0


def claim_run_folder(run_dir: Path, opts: Any) -> Optional[Path]:
    """The checkpoint to resume (``opts.resume``, checked against ``opts``), or None for a fresh start.

    A fresh start over a run is refused unless ``opts.overwrite``, which then removes that
    run's files, and only them.
    """
    if opts.resume and opts.overwrite:
        raise RunError("--resume and --overwrite contradict each other: continue the run, or replace it")
    if opts.resume:
        checkpoint = last_checkpoint(run_dir)
        if checkpoint is None:
            raise RunError(f"--resume: {run_dir} has no checkpoint to continue; drop --resume to start a new run there")
        check_identity(opts, read_config(checkpoint))
        return checkpoint
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not present:
        return None
    if (run_dir / CONFIG_FILE).is_file():
        progress = read_config(run_dir).get("progress", {})  # refuses a config.json that is not a run's
        what = f"a run ({describe_progress(progress)})"
    else:
        what = f"a run's files ({', '.join(present)})"
    if not opts.overwrite:
        raise RunError(f"{run_dir} already holds {what}; pass --resume to continue it, "
                       "or --overwrite to start again and replace it")
    for name in [*present, EVAL_DIR]:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return None


# What a resumed run must share with its checkpoint: (option, where the run's config.json keeps it).
IDENTITY = (("backbone", "backbone"), ("image_size", "image_size"), ("seg_width", "seg_width"), ("top_k", "top_k"),
            ("data", "data"), ("category", "category"), ("batch_size", "options.batch_size"))


def _recorded(config: Dict[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def check_identity(opts: Any, config: Dict[str, Any]) -> None:
    """Refuse a --resume whose options would train a different model than the checkpoint holds."""
    differences: List[str] = []
    for option, key in IDENTITY:
        asked, recorded = getattr(opts, option), _recorded(config, key)
        if option == "data":
            asked = str(Path(asked).resolve())
        if recorded is not None and asked != recorded:
            differences.append(f"--{option.replace('_', '-')} {asked} (the run has {recorded})")
    if differences:
        raise RunError(f"--resume with different settings: {'; '.join(differences)}; "
                       "resume with the run's settings, or train a new run in another --out")


def warn_odd_image_sizes(paths: List[Path], image_size: int) -> None:
    """One warning for training images far smaller or larger than the model's input (read from headers only)."""
    from PIL import Image

    small, large = [], []
    for path in paths:
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (OSError, ValueError):
            continue  # decodable by OpenCV but not PIL: no opinion
        if min(width, height) * MAX_UPSCALE < image_size:
            small.append((path, width, height))
        elif max(width, height) > MAX_DOWNSCALE * image_size:
            large.append((path, width, height))
    if small:
        path, w, h = small[0]
        warnings.warn(f"{len(small)} training image(s) are much smaller than --image-size {image_size} "
                      f"(e.g. {path.name}, {w} x {h}): upscaled, they carry no detail; use photos at least "
                      f"{image_size // 2} px on each side", stacklevel=3)
    if large:
        path, w, h = large[0]
        warnings.warn(f"{len(large)} training image(s) are over {MAX_DOWNSCALE:g}x --image-size {image_size} "
                      f"(e.g. {path.name}, {w} x {h}): small defects vanish in the downscale and every step decodes "
                      f"the full image; crop to the part, or raise --image-size", stacklevel=3)
