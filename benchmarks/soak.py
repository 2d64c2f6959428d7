"""Memory over a long run: the runtime on N test frames, headless; RSS must grow less than 10 MB.

Streams a non-live test pattern (frames come as fast as the model takes them) through the
same ``Stream`` loop as destseg-runtime, with ``report_every``: each periodic report, which
the loop emits after a frame, samples this process's resident set size from /proc, so the
samples sit at exact frame counts with no polling. Growth is measured from the warm-up
sample (allocators, ONNX Runtime arenas and GStreamer pools have settled by then) to the
last frame. Issue 6's target: 20,000 frames, growth under 10 MB.

    python benchmarks/soak.py --bundle BUNDLE [--frames 20000] [--every 1000] [--output soak.avi]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

from destseg.runtime.stream import Stream, StreamOptions

LIMIT_MB = 10.0


def rss_mb() -> float:
    """This process's resident set size in MB (VmRSS in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--every", type=int, default=1000, help="sample RSS every N frames; the first sample is the baseline")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--backend", default="auto")
    p.add_argument("--output", action="append", default=[], help="also write a video output (e.g. soak.avi)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    if not 0 < args.every < args.frames:
        p.error("need 0 < --every < --frames")

    opts = StreamOptions(source="test://ball?live=0", model=args.bundle, backend=args.backend, width=args.width,
                         height=args.height, headless=True, events=os.devnull, outputs=args.output,
                         max_frames=args.frames, report_every=args.every)
    rss_at: Dict[int, float] = {}
    stream = Stream(opts, log=lambda message: None)

    def sample(message: str) -> None:
        """Called with each periodic report, right after frame ``stream.index``; the report at exit
        repeats the last count after the pipeline is gone, so only the first per count is kept."""
        if message.startswith("=== profile") and stream.index not in rss_at:
            rss_at[stream.index] = round(rss_mb(), 2)

    stream.log = sample
    start = time.perf_counter()
    summary = stream.run()
    seconds = time.perf_counter() - start
    samples: List[Dict[str, float]] = [{"frame": f, "rss_mb": mb} for f, mb in rss_at.items()]
    baseline, end = samples[0], samples[-1]
    growth = end["rss_mb"] - baseline["rss_mb"]
    for s in samples:
        print(f"frame {s['frame']:>6}  RSS {s['rss_mb']:8.1f} MB")
    print(f"{summary['frames']} frames in {seconds:.0f} s ({summary['fps']} FPS), {summary['detail']}")
    print(f"RSS growth from frame {baseline['frame']} to {end['frame']}: {growth:+.2f} MB "
          f"(limit {LIMIT_MB:.0f} MB: {'met' if growth < LIMIT_MB else 'NOT met'})")
    if args.json:
        from destseg.atomic import write_json

        write_json(args.json, {"frames": summary["frames"], "seconds": round(seconds, 1), "fps": summary["fps"],
                               "growth_mb": round(growth, 2), "limit_mb": LIMIT_MB, "samples": samples,
                               "backend": summary["detail"]})
    return 0 if growth < LIMIT_MB and summary["frames"] == args.frames else 1


if __name__ == "__main__":
    sys.exit(main())
