"""destseg-export end to end: the bundle it writes, its atomicity, and how reading one fails.

One real export (resnet18 at 64 x 64, static batch 1, the CLI defaults plus --fp16 and
--engine) is shared by the module; failure cases work on hard-linked clones of it.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from destseg.bundle import BundleError, load_bundle, sha256_file
from destseg.export.cli import main
from destseg.tensorrt import trt_available
from destseg.train.checkpoint import load_run
from tests.test_export_parity import SIZE, frames, make_run, reference

THRESHOLDS = {"image": 0.61, "pixel": 0.42, "method": "f1"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = make_run(root / "run", thresholds=THRESHOLDS)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([str(run), "--out", str(root / "bundle"), "--fp16", "--engine"])
    return root, run, root / "bundle", rc, out.getvalue()


def test_cli_writes_a_bundle_that_loads_and_describes_the_model(exported):
    root, run, bundle_dir, rc, stdout = exported
    assert rc == 0, stdout
    bundle = load_bundle(bundle_dir)
    assert bundle.image_size == SIZE
    assert bundle.input_name == "image"
    assert bundle.output_names == ["anomaly_map", "score"]
    assert bundle.thresholds == THRESHOLDS
    assert not bundle.dynamic_batch
    assert bundle.variants == ["fp32", "fp16"]
    # FP16 is TensorRT's job from the FP32 graph: no second ONNX is shipped.
    assert bundle.model_path("fp16") == bundle.model_path("fp32") == bundle_dir / "model.onnx"
    meta = bundle.meta
    assert meta["models"]["fp16"]["built_from"] == "fp32"
    assert meta["model"]["backbone"] == "resnet18"
    assert meta["model"]["config"]["thresholds"] == THRESHOLDS
    assert meta["preprocessing"]["normalisation"] == "inside-graph"
    assert meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["io"]["inputs"][0] == {"name": "image", "shape": [1, SIZE, SIZE, 3], "dtype": "uint8"}
    assert meta["files"]["model.onnx"] == sha256_file(bundle_dir / "model.onnx")
    assert "parity vs PyTorch" in stdout and "TensorRT ops: all supported" in stdout


def test_bundle_names_and_shapes_match_the_graph_and_pytorch(exported):
    _, run, bundle_dir, _, _ = exported
    bundle = load_bundle(bundle_dir)
    session = ort.InferenceSession(str(bundle.model_path("fp32")), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [bundle.input_name]
    assert [o.name for o in session.get_outputs()] == bundle.output_names
    assert session.get_inputs()[0].shape == bundle.meta["io"]["inputs"][0]["shape"]
    images = frames(1, seed=11)
    got_map, got_score = session.run(None, {"image": images})
    ref_map, ref_score = reference(*load_run(run), images)
    assert np.abs(got_map - ref_map).max() <= 1e-4 and np.abs(got_score - ref_score).max() <= 1e-4


def test_engine_is_built_here_or_left_to_the_device(exported):
    _, _, bundle_dir, _, stdout = exported
    engines = load_bundle(bundle_dir).meta["engines"]
    if trt_available():
        (built,) = engines["built"]
        assert (bundle_dir / built["file"]).is_file() and built["precision"] == "fp16"
    else:
        assert engines["built"] == [] and "not_built" in engines
        assert "the runtime builds it on the device at first start" in stdout


def test_failed_export_leaves_the_previous_bundle_and_no_half_bundle(exported, capsys):
    root, run, bundle_dir, _, _ = exported
    before = (bundle_dir / "destseg.json").read_bytes()
    # A tolerance of 0 fails the parity check for real, after model.onnx is written.
    rc = main([str(run), "--out", str(bundle_dir), "--parity-tol", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("destseg-export: error: ONNX Runtime differs from PyTorch")
    assert (bundle_dir / "destseg.json").read_bytes() == before
    load_bundle(bundle_dir)  # every hash still matches
    assert sorted(os.listdir(root)) == ["bundle", "run"]  # no temporary or half-written folder


def clone(bundle_dir: Path, dst: Path) -> Path:
    """A hard-linked copy: cheap for a 140 MB model; files are replaced, never written in place."""
    shutil.copytree(bundle_dir, dst, copy_function=os.link)
    return dst


def replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def test_load_bundle_names_a_missing_file(exported, tmp_path):
    bundle = clone(exported[2], tmp_path / "b")
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match="incomplete: model.onnx is missing"):
        load_bundle(bundle)


def test_load_bundle_refuses_an_edited_model(exported, tmp_path):
    bundle = clone(exported[2], tmp_path / "b")
    replace(bundle / "model.onnx", (bundle / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(BundleError, match="model.onnx does not match its sha256"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda meta: dict(meta, schema_version=2), "schema version 2"),
        (lambda meta: {k: v for k, v in meta.items() if k != "io"}, "lacks io"),
        (None, "not valid JSON"),
    ],
)
def test_load_bundle_refuses_a_wrong_description(exported, tmp_path, edit, message):
    bundle = clone(exported[2], tmp_path / "b")
    meta_file = bundle / "destseg.json"
    text = json.dumps(edit(json.loads(meta_file.read_text()))) if edit else meta_file.read_text()[:-20]
    replace(meta_file, text.encode())
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_load_bundle_says_when_a_folder_is_not_a_bundle(exported, tmp_path):
    with pytest.raises(BundleError, match="destseg.json is missing"):
        load_bundle(tmp_path)


def test_cli_reports_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "bundle")]) == 2
    assert "is not a training run" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_cli_refuses_torch_tensorrt_without_engine(exported, tmp_path, capsys):
    assert main([str(exported[1]), "--out", str(tmp_path / "b"), "--via", "torch-tensorrt"]) == 2
    assert "add --engine" in capsys.readouterr().err


def test_cli_says_before_exporting_that_torch_tensorrt_is_missing(exported, tmp_path, capsys):
    from destseg.export.torch_tensorrt import why_no_torch_tensorrt

    if why_no_torch_tensorrt() is None:
        pytest.skip("torch-tensorrt and a GPU are present: the --via torch-tensorrt path would build")
    assert main([str(exported[1]), "--out", str(tmp_path / "b"), "--engine", "--via", "torch-tensorrt"]) == 2
    assert "torch-tensorrt is not possible here" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_torch_tensorrt_fp16_enables_half_kernels():
    """torch-tensorrt before explicit typing builds only enabled_precisions (default FP32), even for a .half() module."""
    import torch

    from destseg.export.torch_tensorrt import compile_settings

    assert compile_settings("fp16") == {"enabled_precisions": {torch.float16}}
    assert compile_settings("fp32") == {"enabled_precisions": {torch.float32}}


def test_cli_rejects_unknown_options():
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", "b", "--calib-dir", "x"])
    assert exc.value.code == 2


def test_int8_options_without_int8_are_named_before_anything_is_exported(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "run"), "--out", str(tmp_path / "b"), "--calib-count", "64", "--allow-degraded",
              "--category", "widget", "--calib-method", "minmax"])  # minmax is the default: not "given"
    assert exc.value.code == 2
    assert "--calib-count, --category, --allow-degraded only apply with --int8" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
