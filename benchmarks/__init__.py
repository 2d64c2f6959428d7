"""Benchmarking, beside the stages: ``destseg-bench`` and the scripts behind BENCHMARKS.md.

Installed as ``destseg.benchmarks``. ``destseg-bench`` (``bench.py``: measuring;
``bench_results.py``: configurations and results; ``bench_report.py``: table, JSON, CSV,
PNG; ``machine.py``: the machine record) runs on a Jetson without torch. The scripts
(``int8_speed.py``, ``compute_budget.py``, ``train_throughput.py``, ``stream_overhead.py``,
``soak.py``) run from a checkout, ``python benchmarks/NAME.py``, and may need the training
stack.
"""
