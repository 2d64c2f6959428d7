"""What streaming costs on top of the model: streaming FPS vs the bare backend's, and latency spread.

Targets (issue 6): streaming FPS >= 0.95 x the bare backend's FPS on the same model, and the
end-to-end p99 <= 1.25 x its p50. The bare figure times ``backend.infer`` on one frame in a
loop; the streaming figure runs destseg-runtime's loop on a non-live test pattern at camera
resolution (GStreamer converts and scales in its own threads, frames are delivered as fast
as the model takes them), headless; its JSON Lines give the per-stage times and, from the
capture timestamps, the FPS. The first ``--warmup`` frames of both are left out.

    python benchmarks/stream_overhead.py --bundle BUNDLE [--frames 300] [--width 1280 --height 720]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

from destseg.latency import latency_statistics
from destseg.runtime.backends import open_backend
from destseg.runtime.stream import StreamOptions, run_stream


def bare(args: argparse.Namespace) -> Dict[str, Any]:
    backend = open_backend(args.backend, args.bundle, args.precision, threads=args.threads)
    size = backend.image_size
    frame = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    for _ in range(args.warmup):
        backend.infer(frame)
    times = []
    start = time.perf_counter()
    for _ in range(args.frames):
        t = time.perf_counter()
        backend.infer(frame)
        times.append((time.perf_counter() - t) * 1e3)
    seconds = time.perf_counter() - start
    backend.close()
    return {"fps": args.frames / seconds, "latency_ms": latency_statistics(times, digits=3), "detail": backend.detail}


def streaming(args: argparse.Namespace) -> Dict[str, Any]:
    """FPS and per-stage statistics from the runtime's own JSON Lines, without the warm-up frames."""
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        opts = StreamOptions(
            source=f"test://{args.pattern}?live=0", model=args.bundle, backend=args.backend, precision=args.precision,
            width=args.width, height=args.height, headless=True, events=str(events),
            max_frames=args.warmup + args.frames, threads=args.threads,
        )
        run_stream(opts, log=lambda message: None)
        rows = [json.loads(line) for line in events.read_text().splitlines()][args.warmup:]
    seconds = rows[-1]["captured_at"] - rows[0]["captured_at"]
    stages = {stage: latency_statistics([r["ms"][stage] for r in rows], digits=3) for stage in rows[0]["ms"]}
    return {"fps": (len(rows) - 1) / seconds, "stages_ms": stages}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, help="bundle folder (destseg-export)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--pattern", default="ball")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()

    plain = bare(args)
    stream = streaming(args)
    e2e = stream["stages_ms"]["end_to_end"]
    result = {
        "backend": plain["detail"],
        "source": f"test://{args.pattern}?live=0 at {args.width}x{args.height}",
        "bare_fps": round(plain["fps"], 2),
        "bare_latency_ms": plain["latency_ms"],
        "stream_fps": round(stream["fps"], 2),
        "stream_stages_ms": stream["stages_ms"],
        "fps_ratio": round(stream["fps"] / plain["fps"], 3),
        "p99_over_p50": round(e2e["p99"] / e2e["median"], 3),
    }
    result["meets_fps_target"] = result["fps_ratio"] >= 0.95
    result["meets_latency_target"] = result["p99_over_p50"] <= 1.25
    print(f"backend            {result['backend']}")
    print(f"bare backend       {result['bare_fps']:.1f} FPS (infer p50 {plain['latency_ms']['median']:.2f} ms, p99 {plain['latency_ms']['p99']:.2f} ms)")
    print(f"streaming          {result['stream_fps']:.1f} FPS from {result['source']}")
    print(f"streaming / bare   {result['fps_ratio']:.3f}  (target >= 0.95: {'met' if result['meets_fps_target'] else 'NOT met'})")
    print(f"end-to-end         p50 {e2e['median']:.2f} ms, p99 {e2e['p99']:.2f} ms, p99/p50 {result['p99_over_p50']:.3f}"
          f"  (target <= 1.25: {'met' if result['meets_latency_target'] else 'NOT met'})")
    for stage, stats in stream["stages_ms"].items():
        print(f"  {stage:<12} median {stats['median']:8.3f} ms   p99 {stats['p99']:8.3f} ms")
    if args.json:
        from destseg.atomic import write_json

        write_json(args.json, result)
    return 0 if result["meets_fps_target"] and result["meets_latency_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
