"""The machine facts destseg-doctor and the bench's machine record share, parsed from what real machines print.

The fixtures (tests/fixtures/jetson, nvidia-smi) are the texts of a JetPack 6.1 Orin Nano,
a JetPack 5.1.2 AGX Orin under load, a desktop RTX 3060, a two-H200 server and a JetPack 6
Orin whose nvidia-smi answers [N/A].
"""
from __future__ import annotations

from pathlib import Path

import pytest

from destseg.hardware import (JETPACK, parse_l4t_core_version, parse_nv_tegra_release, parse_nvidia_smi,
                              parse_tegrastats)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize("name, version, jetpack, tensorrt, board", [
    ("jetson/nv_tegra_release_r36.4.0.txt", "36.4.0", "6.1", "10.3.0", "generic"),
    ("jetson/nv_tegra_release_r35.4.1.txt", "35.4.1", "5.1.2", "8.5.2", "t186ref"),
])
def test_the_l4t_release_names_its_jetpack_and_tensorrt(name, version, jetpack, tensorrt, board):
    release = parse_nv_tegra_release(fixture(name))
    assert (release.version, release.jetpack, release.tensorrt, release.board) == (version, jetpack, tensorrt, board)


def test_an_unknown_or_foreign_release_file_is_read_or_refused():
    future = parse_nv_tegra_release("# R39 (release), REVISION: 9, GCID: 1, BOARD: generic, EABI: aarch64")
    assert (future.version, future.jetpack, future.tensorrt) == ("39.9.0", None, None)
    assert parse_nv_tegra_release("") is None
    assert parse_nv_tegra_release("NAME=Ubuntu\n") is None


def test_every_known_release_ships_a_tensorrt_destseg_edge_builds_with():
    from destseg.tensorrt import MIN_VERSION, parse_version

    for l4t, (jetpack, tensorrt) in JETPACK.items():
        assert parse_version(tensorrt) >= MIN_VERSION, (l4t, jetpack)


def test_the_l4t_core_package_version_is_its_release():
    assert parse_l4t_core_version("35.4.1-20230801124926") == "35.4.1"
    assert parse_l4t_core_version("36.4.0-20240912212859") == "36.4.0"
    assert parse_l4t_core_version("") is None


def test_tegrastats_lines_of_jetpack_6_and_5():
    nano = parse_tegrastats(fixture("jetson/tegrastats_orin_nano_r36.txt"))
    assert (nano["ram_used_mb"], nano["ram_total_mb"], nano["swap_total_mb"]) == (3153, 7620, 3810)
    assert (nano["gpu_load_percent"], nano["gpu_mhz"]) == (0, 624)  # JetPack 6 brackets the frequency
    assert nano["temperatures_c"]["gpu"] == pytest.approx(47.812)
    agx = parse_tegrastats(fixture("jetson/tegrastats_agx_orin_r35_busy.txt"))
    assert (agx["ram_used_mb"], agx["ram_total_mb"], agx["gpu_load_percent"], agx["gpu_mhz"]) == (29100, 30536, 37, 1300)
    assert "cv0" not in agx["temperatures_c"] and agx["temperatures_c"]["cpu"] == pytest.approx(44.156)  # -256C: off
    assert parse_tegrastats("tegrastats: command not found") is None


def test_nvidia_smi_lists_each_gpu_even_when_it_answers_na():
    assert parse_nvidia_smi(fixture("nvidia-smi/rtx3060.csv")) == [
        {"name": "NVIDIA GeForce RTX 3060", "driver": "535.154.05", "memory": "12288 MiB", "max_sm_clock": "2100 MHz"}]
    assert [g["name"] for g in parse_nvidia_smi(fixture("nvidia-smi/two_h200.csv"))] == ["NVIDIA H200"] * 2
    assert parse_nvidia_smi(fixture("nvidia-smi/orin_r36.csv"))[0]["memory"] == "[N/A]"
    assert parse_nvidia_smi("") == []
