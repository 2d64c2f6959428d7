"""The one /proc/cpuinfo parser, on the texts of the machines the project runs on.

Fixtures (tests/fixtures/cpuinfo/) are /proc/cpuinfo as those kernels print it: an AVX2 server
(Xeon E5-2686 v4, 2 cores x 2 threads), an AMX server (Xeon Platinum 8481C, Sapphire Rapids,
2 cores x 2 threads) and a Jetson Orin Nano (6 Cortex-A78AE cores; Arm kernels list no core ids).
Threads, bf16 autocast and the benchmarks' machine record all come from this parse.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from destseg.benchmarks.machine import cpu_info
from destseg.cpu import CpuInfo, native_bf16, parse_cpuinfo, physical_cores, usable_cpus

FIXTURES = Path(__file__).parent / "fixtures" / "cpuinfo"


def fixture(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text()


@pytest.mark.parametrize("name, model, processors, cores, bf16", [
    ("avx2_server", "Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", 4, 2, False),
    ("amx_server", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", 4, 2, True),
    ("jetson_orin_nano", "ARMv8 Processor rev 1 (v8l)", 6, 0, False),
])
def test_model_counts_and_bf16_of_each_machine(name, model, processors, cores, bf16):
    info = parse_cpuinfo(fixture(name))
    assert (info.model, info.processors, info.physical_cores) == (model, processors, cores)
    assert native_bf16(info.flags) is bf16


def test_flags_come_from_flags_on_x86_and_features_on_arm():
    avx2, amx, orin = (parse_cpuinfo(fixture(n)).flags for n in ("avx2_server", "amx_server", "jetson_orin_nano"))
    assert "avx2" in avx2 and "avx512f" not in avx2
    assert {"amx_bf16", "amx_tile", "avx512_bf16"} <= amx
    assert {"asimd", "asimddp"} <= orin and "avx2" not in orin
    # the "bugs" line is not read as flags
    assert "spectre_v1" not in avx2


def test_threads_are_physical_cores_capped_by_affinity():
    usable = usable_cpus()
    assert physical_cores(parse_cpuinfo(fixture("avx2_server"))) == min(2, usable)
    # no core ids (Arm): every usable CPU is a core
    assert physical_cores(parse_cpuinfo(fixture("jetson_orin_nano"))) == usable
    assert physical_cores(CpuInfo(None, frozenset(), 64, 32)) == min(32, usable)


def test_no_cpuinfo_means_no_flags_and_one_thread_at_least():
    info = parse_cpuinfo("")
    assert info == CpuInfo(None, frozenset(), 0, 0)
    assert not native_bf16(info.flags) and physical_cores(info) >= 1


def test_the_machine_record_reads_the_same_parse():
    record = cpu_info(fixture("amx_server"))
    assert record["model"] == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert record["physical_cores"] == 2 and "amx_tile" in record["flags"]
    assert record["flags"] == sorted(parse_cpuinfo(fixture("amx_server")).flags)

