"""Shared fixtures: a small synthetic dataset and tiny real training runs and bundles.

Everything is generated here, once per session: nothing is downloaded. The runs use a
random teacher at 64 x 64 so the suite stays fast on two CPU cores; the pretrained
EfficientNet-Lite0 teacher is exercised by its own tests.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

CATEGORY = "widget"
TINY = dict(image_size=64, batch_size=4, steps_student=3, steps_seg=3, workers=0, teacher="random", evaluate=False)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """An MVTec-layout dataset root with one category, CATEGORY, at 64 x 64."""
    from destseg.train.synthetic_dataset import main

    root = tmp_path_factory.mktemp("data")
    assert main([str(root), "--category", CATEGORY, "--train", "12", "--test", "12", "--size", "64", "--seed", "0"]) == 0
    return root


@pytest.fixture(scope="session")
def synthetic_category() -> str:
    return CATEGORY


def train_tiny(data: Path, out: Path, **overrides) -> Path:
    from destseg.train.trainer import TrainOptions, train

    opts = dict(TINY, data=str(data), category=CATEGORY, out=str(out))
    opts.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-teacher warning is expected here
        return train(TrainOptions(**opts))


def untrained_run(run_dir: Path, backbone: str = "resnet18", size: int = 64, seed: int = 0, **config) -> Path:
    """A run folder as destseg-train leaves it, holding a seeded, untrained DeSTSeg whose map varies.

    Every batch norm gets random statistics and affine parameters, as training leaves them: the
    spec's init starts with a near-constant map and zero residual BNs (whose folded convolutions
    are all equal), and parity or INT8 checks on those would prove little.
    """
    import torch

    from destseg.train.checkpoint import save_checkpoint
    from destseg.train.model import DeSTSeg

    torch.manual_seed(seed)
    model = DeSTSeg(backbone, seg_head=config.get("seg_head", "paper"))
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
        torch.nn.init.normal_(bn.bias, 0.0, 0.2)
        bn.running_mean.normal_(0.0, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    cfg = {**model.architecture(), "teacher": "random", "image_size": size, "category": CATEGORY, **config}
    save_checkpoint(run_dir, model, cfg, {"phase": "done", "step": 0})
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(synthetic_root, tmp_path_factory) -> Path:
    """A trained resnet18 run (random teacher) at 64 x 64."""
    return train_tiny(synthetic_root, tmp_path_factory.mktemp("run") / "resnet18")


@pytest.fixture(scope="session")
def tiny_run_lite0(synthetic_root, tmp_path_factory) -> Path:
    """A trained efficientnet_lite0 run (random teacher) at 64 x 64."""
    return train_tiny(synthetic_root, tmp_path_factory.mktemp("run") / "lite0", backbone="efficientnet_lite0")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    """The tiny resnet18 run exported as an FP32 bundle (batch 1)."""
    from destseg.export.bundle_writer import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    export_bundle(tiny_run, out)
    return out
