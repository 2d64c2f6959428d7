"""The exported graph computes what the trained model computes, for both backbones.

Runs are real DeSTSeg models at 64 x 64 written with the checkpoint API (random weights,
no training: parity does not depend on what the weights learned), exported with a dynamic
batch and run by ONNX Runtime at batch 1 and 4 against ``model.predict`` in PyTorch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
import onnxruntime as ort
import pytest
import torch

from destseg.export.bundle_writer import ExportOptions, export_bundle
from destseg.export.fused import FusedDeSTSeg, FusedError, fused_from_run
from destseg.export.onnx_export import read_metadata
from destseg.export.trt_ops import supported_ops, tensorrt_problems
from destseg.train.checkpoint import load_run, weights_sha256
from destseg.train.model import DeSTSeg
from tests.conftest import untrained_run

SIZE = 64
# (backbone, segmentation head): the light head's depthwise-separable convs go through every check too
MODELS = (("resnet18", "paper"), ("efficientnet_lite0", "paper"), ("efficientnet_lite0", "light"))


def make_run(run_dir: Path, backbone: str = "resnet18", seed: int = 0, **config) -> Path:
    return untrained_run(run_dir, backbone, SIZE, seed, **config)


@dataclass
class Exported:
    run: Path
    bundle: Path
    meta: dict
    model: DeSTSeg
    config: dict
    session: ort.InferenceSession


@pytest.fixture(scope="module", params=MODELS, ids=["-".join(m) for m in MODELS])
def exported(request, tmp_path_factory) -> Exported:
    backbone, head = request.param
    root = tmp_path_factory.mktemp(f"{backbone}-{head}")
    run = make_run(root / "run", backbone, seg_head=head)
    meta = export_bundle(run, root / "bundle", ExportOptions(dynamic_batch=True))
    model, config = load_run(run)
    session = ort.InferenceSession(str(root / "bundle" / "model.onnx"), providers=["CPUExecutionProvider"])
    return Exported(run, root / "bundle", meta, model, config, session)


def frames(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)


def reference(model, config, batch_uint8: np.ndarray):
    """PyTorch on the run's own normalisation, computed here, outside the fused module."""
    mean = np.asarray(config["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(config["std"], np.float32).reshape(1, 3, 1, 1)
    x = (batch_uint8.astype(np.float32).transpose(0, 3, 1, 2) / 255.0 - mean) / std
    with torch.no_grad():
        out = model.predict(torch.from_numpy(x))
    return out["anomaly_map"].numpy(), out["score"].numpy()


@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_runtime_matches_pytorch(exported, batch):
    images = frames(batch, seed=batch)
    ref_map, ref_score = reference(exported.model, exported.config, images)
    got_map, got_score = exported.session.run(["anomaly_map", "score"], {"image": images})
    assert got_map.shape == (batch, 1, SIZE, SIZE) and got_score.shape == (batch,)
    assert np.abs(got_map - ref_map).max() <= 1e-4
    assert np.abs(got_score - ref_score).max() <= 1e-4
    # Noise images give different maps: the comparison is not between constants.
    assert np.ptp(ref_map) > 1e-3


def test_graph_io_is_uint8_nhwc_in_and_static_map_out(exported):
    (image,) = exported.session.get_inputs()
    assert (image.name, image.type, image.shape) == ("image", "tensor(uint8)", ["batch", SIZE, SIZE, 3])
    outputs = {o.name: o.shape for o in exported.session.get_outputs()}
    assert outputs == {"anomaly_map": ["batch", 1, SIZE, SIZE], "score": ["batch"]}
    assert exported.meta["io"]["batch_profile"] == [1, 1, 8]
    assert [p["batch"] for p in exported.meta["export"]["parity"]] == [1, 4]


def test_teacher_runs_once_per_forward(exported):
    """The authors' code runs the teacher twice at inference; the fused module once."""
    calls = []
    hook = exported.model.teacher.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            fused_from_run(exported.model, exported.config)(torch.from_numpy(frames(1, seed=3)))
    finally:
        hook.remove()
    assert len(calls) == 1


def test_graph_holds_each_network_once(exported):
    """Each convolution's weights feed one Conv node, and teacher, student and segmentation
    network are all there."""
    graph = onnx.load(str(exported.bundle / "model.onnx")).graph
    initializers = {t.name: t for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    # By content: a network traced twice shares (or duplicates) the very same weight values.
    weights = [numpy_helper.to_array(initializers[n.input[1]]).tobytes() for n in convs]
    assert len(weights) == len(set(weights))
    for part in ("teacher", "student", "segmentation"):
        assert any(f"/{part}/" in n.name for n in convs), part


def test_every_op_is_one_tensorrt_parses_without_plugins(exported):
    graph = onnx.load(str(exported.bundle / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)
    assert ops <= supported_ops(), ops - supported_ops()
    assert tensorrt_problems(graph) == []
    assert exported.meta["export"]["tensorrt_ops"]["problems"] == []
    assert set(exported.meta["export"]["tensorrt_ops"]["ops"]) == ops


def test_onnx_metadata_describes_the_run(exported):
    config = json.loads((exported.run / "config.json").read_text())
    props = read_metadata(onnx.load(str(exported.bundle / "model.onnx")))
    assert props["backbone"] == config["backbone"]
    assert int(props["image_size"]) == SIZE
    assert props["weights_sha256"] == weights_sha256(exported.run)
    assert json.loads(props["config"]) == config
    assert json.loads(props["thresholds"]) == {}
    assert json.loads(props["mean"]) == config["mean"]


def test_fused_module_matches_predict_for_both_input_formats(exported):
    model, config = exported.model, exported.config
    images = frames(1, seed=7)
    ref_map, ref_score = reference(model, config, images)
    with torch.no_grad():
        got_map, got_score = fused_from_run(model, config)(torch.from_numpy(images))
        mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(config["std"]).view(1, 3, 1, 1)
        x = (torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255 - mean) / std
        nchw_map, nchw_score = fused_from_run(model, config, "float-nchw")(x)
    for m, s in ((got_map, got_score), (nchw_map, nchw_score)):
        assert np.abs(m.numpy() - ref_map).max() <= 1e-5
        assert np.abs(s.numpy() - ref_score).max() <= 1e-5


def test_fused_module_refuses_unknown_input_format():
    with pytest.raises(FusedError, match="uint8-nhwc, float-nchw"):
        FusedDeSTSeg(DeSTSeg("resnet18"), SIZE, (0.5,) * 3, (0.5,) * 3, "uint8-nchw")
