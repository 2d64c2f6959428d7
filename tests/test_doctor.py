"""destseg-doctor: its decisions on what real machines print, its tiny bundle, and a real run here.

Nothing here is a Jetson, so each decision (is this a failure on this box, and what fixes
it?) is fed the texts a Jetson, a GPU server or a container gives (tests/fixtures/), and
the CLI runs for real on the CPU half: GStreamer probes, ONNX Runtime FP32 and INT8 on the
shipped bundle, TensorRT "not present". A real blacklisted plugin (an empty .so) shows the
container failure of jetson-containers#71 end to end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from destseg.cpu import native_bf16
from destseg.hardware import parse_nv_tegra_release, parse_nvidia_smi, parse_tegrastats
from destseg.runtime.backends import why_no_openvino_backend
from destseg.runtime.cameras import MJPEG, RAW, CameraMode
from destseg.runtime.doctor import checked_platform, main, render_table
from destseg.runtime.doctor_checks import (ABSENT, ELEMENTS, FAIL, OK, WARN, Check, Element, Machine, blacklist_check,
                                           camera_check, cuda_check, device_access_check, element_check,
                                           element_probes, encoder_summary, memory_check, parse_blacklist,
                                           pycuda_check, release_check, summarize_modes, tensorrt_check)
from destseg.runtime.doctor_smoke import SHIPPED_BUNDLE, TOLERANCE, comparison_check
from destseg.runtime.sinks import choose_encoder, encoder_probe, parse_sink, sink_pipeline
from destseg.runtime.sources import parse_source, source_pipeline
from tests.make_doctor_bundle import write_doctor_bundle
from tests.test_jetson_caps import _links
from tests.test_runtime_pipelines import C920_CAPS

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def jetson(release: str = "jetson/nv_tegra_release_r36.4.0.txt", core: str = "36.4.0", container: bool = False,
           stats: str = "jetson/tegrastats_orin_nano_r36.txt") -> Machine:
    return Machine("aarch64", "NVIDIA Jetson Orin Nano Developer Kit", parse_nv_tegra_release(fixture(release)), core,
                   tuple(parse_nvidia_smi(fixture("nvidia-smi/orin_r36.csv"))), parse_tegrastats(fixture(stats)), container)


PC = Machine("x86_64", "AMD EPYC", None, None, (), None, False)
GPU_SERVER = Machine("x86_64", "Intel Xeon", None, None, tuple(parse_nvidia_smi(fixture("nvidia-smi/two_h200.csv"))), None, False)


# --- platform ------------------------------------------------------------------------------------

def test_the_release_line_names_jetpack_and_refuses_a_container_built_for_another_major():
    assert release_check(jetson()).status == OK
    assert "JetPack 6.1 (ships TensorRT 10.3.0)" in release_check(jetson()).detail
    mismatched = release_check(jetson(core="35.4.1", container=True))
    assert mismatched.status == FAIL and "docker/jetson/build.sh" in mismatched.fix
    assert release_check(jetson(core="36.3.0", container=True)).status == OK  # any minor of the host's major runs
    old = Machine("aarch64", "Jetson Nano", parse_nv_tegra_release("# R32 (release), REVISION: 7.4, GCID: 1"), None, (), None, False)
    assert release_check(old).status == FAIL and "JetPack 5.1" in release_check(old).fix
    assert release_check(PC).status == ABSENT


def test_a_jetson_root_is_read_as_a_jetson(tmp_path):
    from destseg.runtime.doctor_checks import read_machine

    assert not read_machine(str(tmp_path)).jetson
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(fixture("jetson/nv_tegra_release_r35.4.1.txt"))
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    machine = read_machine(str(tmp_path))
    assert machine.jetson and machine.nvidia_gpu and machine.model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert (machine.l4t.version, machine.l4t.jetpack) == ("35.4.1", "5.1.2")
    assert checked_platform("auto", machine) == "jetson"


def test_little_free_ram_warns_before_an_engine_build_runs_out():
    assert memory_check(parse_tegrastats(fixture("jetson/tegrastats_orin_nano_r36.txt"))).status == OK
    busy = memory_check(parse_tegrastats(fixture("jetson/tegrastats_agx_orin_r35_busy.txt")))
    assert busy.status == WARN and "only 1436 MB free" in busy.fix and "--workspace-gb" in busy.fix


def test_gpu_nodes_this_user_cannot_open_name_the_video_group():
    denied = device_access_check({"/dev/nvmap": False, "/dev/nvgpu/igpu0/ctrl": True})
    assert denied.status == FAIL and "/dev/nvmap" in denied.detail and "usermod -aG video" in denied.fix
    assert "--group-add" in denied.fix
    assert device_access_check({"/dev/nvmap": True}).status == OK


# --- libraries -----------------------------------------------------------------------------------

def test_a_missing_tensorrt_fails_on_a_jetson_and_is_only_absent_elsewhere():
    on_jetson = tensorrt_check(jetson(), None, None)
    assert on_jetson.status == FAIL and "python3-libnvinfer" in on_jetson.fix
    assert tensorrt_check(PC, None, None) == Check("libraries", "TensorRT", ABSENT, "not installed")
    assert "pip install tensorrt" in tensorrt_check(GPU_SERVER, None, None).fix


def test_tensorrt_bindings_built_for_numpy_1_say_to_pin_numpy():
    error = ("ImportError: A module that was compiled using NumPy 1.x cannot be run in NumPy 2.2.6 as it may crash.")
    for version in ("10.3.0", None):  # JetPack's apt bindings have no pip metadata to read a version from
        check = tensorrt_check(jetson(), version, error)
        assert check.status == FAIL and check.fix.startswith("pip install 'numpy<2'"), version


def test_a_tensorrt_other_than_jetpacks_is_pointed_out():
    assert tensorrt_check(jetson(), "10.3.0.30", None).status == OK
    shadowed = tensorrt_check(jetson(), "10.13.3.9", None)
    assert shadowed.status == WARN and "JetPack 6.1 ships 10.3.0" in shadowed.detail
    assert tensorrt_check(GPU_SERVER, "8.4.3.1", None).status == FAIL


def test_cuda_and_pycuda_fail_only_where_the_gpu_path_is_expected():
    assert cuda_check(jetson(), None, None, "no NVIDIA driver (libcuda) found").status == FAIL
    assert "--runtime nvidia" in cuda_check(jetson(), None, None, "no driver").fix
    assert cuda_check(PC, None, None, "no NVIDIA driver (libcuda) found").status == ABSENT
    assert cuda_check(GPU_SERVER, "12.8", ("NVIDIA H200", "9.0"), None).detail == "CUDA 12.8, GPU 0: NVIDIA H200 (compute capability 9.0)"
    assert pycuda_check(jetson(), None, "not installed", False).status == FAIL
    assert pycuda_check(PC, None, "not installed", False).status == ABSENT
    assert pycuda_check(GPU_SERVER, None, "not installed", True).status == FAIL  # TensorRT is there, the backend needs both


# --- GStreamer -----------------------------------------------------------------------------------

def test_blacklisted_nvidia_plugins_fail_on_a_jetson_with_the_container_fixes():
    names = parse_blacklist(fixture("gst-inspect/blacklisted_nvidia_plugins.txt"))
    assert len(names) == 10 and "libgstnvvidconv.so" in names and "libgstomx.so" in names
    check = blacklist_check(names, jetson=True)
    assert check.status == FAIL and "LD_PRELOAD=/usr/lib/aarch64-linux-gnu/libGLdispatch.so.0" in check.fix
    assert "rm -rf ~/.cache/gstreamer-1.0" in check.fix
    assert blacklist_check(["libgstfluidsynthmidi.so"], jetson=False).status == WARN
    assert parse_blacklist(fixture("gst-inspect/none_blacklisted.txt")) == []
    assert blacklist_check([], jetson=True).status == OK


def test_an_encoder_that_registers_but_cannot_start_is_a_warning_with_the_fallback_named():
    """Orin Nano: nvv4l2h264enc is there, NVENC is not (dusty-nv/jetson-utils#197)."""
    nvenc = next(e for e in ELEMENTS if e.name == "nvv4l2h264enc")
    error = "nvv4l2h264enc0: Cannot identify device '/dev/v4l2-nvenc'."
    check = element_check(nvenc, True, error, True)
    assert check.status == WARN and error in check.detail and "Orin Nano has no NVENC" in check.fix
    choice = choose_encoder("mp4", lambda e: True, {"nvv4l2h264enc": error}.get)
    summary = encoder_summary(choice, None)
    assert summary.status == WARN and "encode with x264enc" in summary.detail and error in summary.detail
    assert element_check(next(e for e in ELEMENTS if e.name == "nvvidconv"), False, None, False).status == FAIL
    assert element_check(next(e for e in ELEMENTS if e.name == "x264enc"), False, None, False).status == ABSENT
    assert element_check(Element("jpegenc", ".avi", ("generic",), "gstreamer1.0-plugins-good"), False, None, False).fix == (
        "install gstreamer1.0-plugins-good")


def _factories(description: str):
    """The element factory names in a gst-launch description."""
    for words in _links(description):
        for word in words:
            if not word.startswith(("video/", "image/")) and "=" not in word and not word.endswith("."):
                yield word
                break


def test_the_doctor_checks_every_element_the_runtime_uses(tmp_path):
    modes = (CameraMode(RAW, "YUY2", 640, 480, Fraction(30)), CameraMode(RAW, "RGB", 640, 480, Fraction(30)),
             CameraMode(MJPEG, None, 1280, 720, Fraction(30)))
    for platform in ("jetson", "generic"):
        texts = [source_pipeline(parse_source("/dev/video0"), 64, platform, mode=m) for m in modes]
        uris = ["test://ball", "rtsp://cam/x", "http://cam/clip.mp4"] + (["csi://0"] if platform == "jetson" else [])
        texts += [source_pipeline(parse_source(u), 64, platform) for u in uris]
        for output in ("display", str(tmp_path / "o.mp4"), str(tmp_path / "o.mkv"), str(tmp_path / "o.avi"), "rtp://h:5000"):
            for encoder in ("nvv4l2h264enc", "x264enc", "openh264enc", "avenc_mpeg4", "jpegenc"):
                texts.append(sink_pipeline(parse_sink(output), 64, 48, 30, platform, encoder))
        texts += list(element_probes().values())
        used = {name for text in texts for name in _factories(text)}
        checked = {e.name for e in ELEMENTS if platform in e.platforms}
        if platform == "generic":
            used -= {"nvvidconv", "nvv4l2h264enc", "h264parse", "nvv4l2decoder", "jpegparse"}  # probes and chains of the Jetson
        assert used <= checked, (platform, used - checked)


# --- cameras -------------------------------------------------------------------------------------

def test_camera_modes_are_summarised_with_their_best_rate():
    check = camera_check("/dev/video0", "HD Pro Webcam C920", C920_CAPS, None)
    assert check == Check("cameras", "/dev/video0 (HD Pro Webcam C920)", OK,
                          "MJPEG 640x480@30, 1920x1080@30; YUY2 640x480@30, 1920x1080@5")
    bayer = camera_check("/dev/video0", "vi-output, imx219 9-0010",
                         "video/x-bayer, format=(string)rggb, width=(int)3280, height=(int)2464, framerate=(fraction)21/1", None)
    assert bayer.status == WARN and "csi://N" in bayer.fix
    busy = camera_check("/dev/video1", None, None, "cannot open camera /dev/video1: busy or not a capture device")
    assert busy.status == WARN and "busy" in busy.detail
    many = [CameraMode(RAW, "YUY2", 16 * i, 12 * i, Fraction(30)) for i in range(1, 10)]
    assert summarize_modes(many, limit=3) == "YUY2 16x12@30, 32x24@30, 48x36@30, +6 more"


# --- smoke ---------------------------------------------------------------------------------------

def test_outputs_beyond_the_precisions_tolerance_fail_with_what_to_do():
    reference = (np.zeros((2, 4, 4), np.float32), np.zeros(2, np.float32))
    close = comparison_check("tensorrt", "fp16", "fp32 engine", reference[0] + 0.005, reference[1], reference, [1.0, 2.0], 3.0)
    assert close.status == OK and "max |map diff| 0.005" in close.detail and "median 1.50 ms" in close.detail
    far = comparison_check("tensorrt", "int8", "int8_trt engine", reference[0] + 2 * TOLERANCE["int8"], reference[1],
                           reference, [1.0], 3.0)
    assert far.status == FAIL and "~/.cache/destseg/engines" in far.fix
    nan = comparison_check("tensorrt", "fp32", "x", reference[0] * np.nan, reference[1], reference, [1.0], 1.0)
    assert nan.status == FAIL


def test_the_shipped_bundle_is_what_its_maker_makes_and_is_tiny(tmp_path):
    import onnx

    from destseg.bundle import load_bundle

    shipped = load_bundle(SHIPPED_BUNDLE)  # every hash checked
    assert sum(f.stat().st_size for f in SHIPPED_BUNDLE.iterdir()) < 64 * 1024
    made = load_bundle(write_doctor_bundle(tmp_path / "bundle"))
    assert {k: v for k, v in made.meta.items() if k != "files"} == {k: v for k, v in shipped.meta.items() if k != "files"}
    for variant in shipped.variants:
        assert onnx.load(str(made.model_path(variant))) == onnx.load(str(shipped.model_path(variant))), variant


def test_the_shipped_bundle_uses_only_what_tensorrt_8_5_parses():
    import onnx

    from destseg.bundle import load_bundle
    from destseg.export.trt_ops import tensorrt_problems

    bundle = load_bundle(SHIPPED_BUNDLE)
    for variant in ("fp32", "int8_trt"):  # what the tensorrt backend builds (int8_cpu is ONNX Runtime's)
        assert tensorrt_problems(onnx.load(str(bundle.model_path(variant)))) == [], variant


# --- the CLI, for real -----------------------------------------------------------------------------

def test_checked_platform_follows_the_machine_unless_asked():
    assert checked_platform("auto", jetson()) == "jetson"
    assert checked_platform("auto", PC) == "generic"
    assert checked_platform("jetson", PC) == "jetson"


def test_the_doctor_runs_the_cpu_half_here_and_marks_the_rest_not_present(capsys):
    assert main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    lines = {(c["section"], c["name"]): c for c in report["checks"]}
    assert report["platform"] == "generic" and not report["failed"]
    assert lines[("smoke", "onnxruntime fp32")]["status"] == OK and "the reference" in lines[("smoke", "onnxruntime fp32")]["detail"]
    int8 = lines[("smoke", "onnxruntime int8")]
    assert int8["status"] == OK and "int8_cpu" in int8["detail"] and "max |map diff|" in int8["detail"]
    assert lines[("smoke", "test:// frames")]["detail"].startswith("20 frames of test://ball")
    assert lines[("gstreamer", "x264enc")]["detail"].startswith("ran a frame to EOS")
    assert lines[("gstreamer", "H.264 outputs")]["status"] == OK
    if why_no_openvino_backend() is None:  # make install adds OpenVINO on x86: it is smoke-tested against the reference
        for precision in ("fp32", "int8"):
            line = lines[("smoke", f"openvino {precision}")]
            assert line["status"] == OK and "max |map diff|" in line["detail"], line
        assert lines[("smoke", "openvino bf16")]["status"] == (OK if native_bf16() else "skipped")
    else:
        assert lines[("smoke", "openvino (fp32, bf16, int8)")]["status"] == "skipped"
    if lines[("libraries", "TensorRT")]["status"] == ABSENT:  # no TensorRT here: its smoke lines say so, no failure
        assert lines[("smoke", "tensorrt (fp32, fp16, int8)")]["status"] == "skipped"
    assert report["machine"]["architecture"]
    assert main([]) == 0
    table = capsys.readouterr().out
    assert "onnxruntime int8" in table and "nothing failed" in table.splitlines()[-1]


def test_quick_mode_skips_cameras_and_the_smoke_test(capsys):
    assert main(["--quick", "--json"]) == 0
    sections = {c["section"] for c in json.loads(capsys.readouterr().out)["checks"]}
    assert sections == {"platform", "libraries", "gstreamer"}


def test_a_bundle_that_is_not_one_is_refused_before_any_check(tmp_path, capsys):
    assert main(["--bundle", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("destseg-doctor: error: ") and "destseg.json is missing" in err and err.count("\n") == 1


def test_a_users_bundle_is_smoke_tested_too(tmp_path, capsys):
    from tests.test_runtime_backends import write_brightness_bundle

    bundle = write_brightness_bundle(tmp_path / "bundle", size=32)
    assert main(["--bundle", str(bundle), "--frames", "3", "--json"]) == 0
    lines = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"] if c["section"] == "smoke"}
    assert lines["onnxruntime fp32"]["status"] == OK and "over 3 frames" in lines["onnxruntime fp32"]["detail"]
    assert lines["onnxruntime int8"]["status"] == "skipped" and "no int8 model" in lines["onnxruntime int8"]["detail"]


def test_blacklisted_nvidia_plugins_fail_the_doctor_with_real_gstreamer(tmp_path):
    """What a container without LD_PRELOAD or the video group shows: NVIDIA's plugins fail to load, get
    blacklisted, and the Jetson's elements are missing (here an empty libgstnvvidconv.so does the same)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "libgstnvvidconv.so").write_bytes(b"")
    env = dict(os.environ, GST_PLUGIN_PATH=str(plugins), GST_REGISTRY=str(tmp_path / "registry.bin"))
    done = subprocess.run([sys.executable, "-m", "destseg.runtime.doctor", "--quick", "--json", "--platform", "jetson"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert lines["blacklisted plugins"]["status"] == FAIL and "libgstnvvidconv.so" in lines["blacklisted plugins"]["detail"]
    assert "libGLdispatch" in lines["blacklisted plugins"]["fix"]
    assert lines["nvvidconv"]["status"] == FAIL and lines["nvvidconv"]["detail"].startswith("not installed")
    assert all(c["fix"] for c in lines.values() if c["status"] in (FAIL, WARN))  # each failure says what to do


def test_the_table_puts_each_fix_under_its_line():
    checks = [Check("libraries", "TensorRT", FAIL, "not installed", "sudo apt-get install python3-libnvinfer"),
              Check("libraries", "NumPy", OK, "numpy 1.24.4")]
    lines = render_table(checks, "header").splitlines()
    assert lines[3].split() == ["libraries", "TensorRT", "FAIL", "not", "installed"]
    assert lines[4].strip() == "-> sudo apt-get install python3-libnvinfer"
    assert lines[5].split()[:3] == ["NumPy", "ok", "numpy"]
    assert lines[-1] == "2 checks: 1 ok, 1 FAIL. FAILED: fix the FAIL lines above."


def test_the_doctor_imports_no_torch():
    code = "import sys, destseg.runtime.doctor; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_encoder_probes_feed_the_runtime_chains():
    assert element_probes()["x264enc"] == encoder_probe("x264enc")
