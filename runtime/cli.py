"""destseg-runtime: stream a camera, file or URL through a bundle; verdicts, heatmaps and a latency profile out.

Exit status: 0 done; 2 bad input found before streaming (one line says what to do);
1 the stream failed after it started (outputs and profile were still finalised); 130
aborted by a second SIGINT.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from destseg.runtime.backends import BACKENDS, PRECISIONS, is_run
from destseg.runtime.errors import StreamError
from destseg.runtime.gst import PLATFORMS
from destseg.runtime.stream import StreamOptions, run_stream

DEFAULT_BUNDLE = "bundle"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="destseg-runtime",
        description="Run DeSTSeg on a camera, video file, RTSP stream, image folder or test pattern; "
                    "show or record the heatmap overlay, print verdicts as JSON Lines and profile every stage.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", help="camera: /dev/video0, v4l2:///dev/video0 or csi://0 (Jetson)")
    src.add_argument("--input", help="video file, file:// or http(s):// URI, rtsp://..., a folder of images, or test://PATTERN[?live=0&frames=N&format=I420]")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--bundle", default=os.environ.get("DESTSEG_BUNDLE", DEFAULT_BUNDLE),
                       help="bundle folder from destseg-export (default $DESTSEG_BUNDLE or ./bundle)")
    model.add_argument("--run", help="training run folder instead of a bundle (torch backend)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (auto: TensorRT, else OpenVINO on x86, else ONNX Runtime, else PyTorch)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="model precision (auto: INT8 where the bundle has it)")
    p.add_argument("--platform", choices=PLATFORMS, default="auto", help="GStreamer elements: jetson (nvvidconv, ...) or generic")
    p.add_argument("--width", type=int, default=640, help="camera / test pattern width (the nearest camera mode is used)")
    p.add_argument("--height", type=int, default=480, help="camera / test pattern height")
    p.add_argument("--fps", type=float, default=30.0, help="camera / test pattern frame rate")
    p.add_argument("--realtime", action="store_true", help="play files at their frame rate, dropping frames like a camera")
    p.add_argument("--latency", dest="latency_ms", type=int, default=100, help="RTSP jitter buffer in ms")
    p.add_argument("--output", action="append", default=[],
                   help="display, FILE.mp4|.mkv|.avi or rtp://HOST:PORT (repeatable; default display unless --headless)")
    p.add_argument("--headless", action="store_true", help="no display; one JSON line per frame on stdout (or --events)")
    p.add_argument("--events", help="write the JSON Lines to this file instead of stdout")
    p.add_argument("--save-anomalies", metavar="DIR", help="save every NG frame and its heatmap here")
    p.add_argument("--profile", metavar="FILE.json", help="write the latency summary here at exit")
    p.add_argument("--profile-csv", metavar="FILE", help="write per-frame stage timings here")
    p.add_argument("--report-every", type=int, default=0, metavar="N", help="print the summary every N frames")
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--threshold", type=float, help="image-score threshold for NG (default: the bundle's)")
    p.add_argument("--pixel-threshold", type=float, help="map threshold for outlines (default: the bundle's)")
    p.add_argument("--threads", type=int, help="CPU threads for OpenVINO / ONNX Runtime / PyTorch (default: physical cores)")
    p.add_argument("--device", help="OpenVINO device: CPU (default), GPU or NPU where OpenVINO lists them; TensorRT: GPU index")
    p.add_argument("--reconnect-delay", type=float, default=0.5, metavar="S", help="first wait before reopening a lost live source")
    p.add_argument("--reconnect-max-delay", type=float, default=10.0, metavar="S", help="longest wait between reopen attempts")
    p.add_argument("--stall-timeout", type=float, default=10.0, metavar="S",
                   help="a source without a frame for S seconds counts as lost (live: reopened; files: error)")
    p.add_argument("--bitrate", dest="bitrate_kbps", type=int, default=4000, help="H.264 bitrate in kbit/s for files and RTP")
    line = p.add_argument_group("the line: dashboard, MQTT, webhooks, inspection rules")
    line.add_argument("--serve", metavar="HOST:PORT", help="serve the live dashboard and its JSON API here (127.0.0.1:8080: this machine only)")
    line.add_argument("--token", help="token that state changes on the dashboard need (required to serve beyond 127.0.0.1)")
    line.add_argument("--token-file", metavar="FILE", help="read the token from the first line of FILE (keeps it out of the process list)")
    line.add_argument("--mqtt", action="append", default=[], metavar="mqtt://HOST:PORT/TOPIC",
                      help="publish every event (QoS 1) to TOPIC, retained online/offline on TOPIC/status (repeatable)")
    line.add_argument("--webhook", dest="webhooks", action="append", default=[], metavar="URL",
                      help="HTTP POST every event's JSON to URL (repeatable)")
    line.add_argument("--deadline-ms", type=float, metavar="N", help="a verdict later than N ms after capture is sent as UNKNOWN (counted)")
    line.add_argument("--roi", metavar="MASK.png", help="inspect only where the mask is white (black = ignore)")
    line.add_argument("--min-defect-area", type=int, metavar="PX",
                      help="NG only if a region above the pixel threshold (inside --roi) covers at least PX frame pixels")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run is None and is_run(args.bundle):  # else it would run in PyTorch, seconds a frame, unannounced
        print(f"destseg-runtime: error: --bundle {args.bundle} is a training run, not a bundle; export it with "
              f"destseg-export {args.bundle} --out BUNDLE, or run it in PyTorch with --run {args.bundle}", file=sys.stderr)
        return 2
    opts = StreamOptions(
        source=args.camera or args.input,
        model=args.run or args.bundle,
        backend=args.backend,
        precision=args.precision,
        platform=args.platform,
        width=args.width,
        height=args.height,
        fps=args.fps,
        realtime=args.realtime,
        outputs=args.output,
        headless=args.headless,
        events=args.events,
        save_anomalies=args.save_anomalies,
        profile=args.profile,
        profile_csv=args.profile_csv,
        report_every=args.report_every,
        max_frames=args.max_frames,
        duration=args.duration,
        threshold=args.threshold,
        pixel_threshold=args.pixel_threshold,
        threads=args.threads,
        device=args.device,
        latency_ms=args.latency_ms,
        reconnect_delay=args.reconnect_delay,
        reconnect_max_delay=args.reconnect_max_delay,
        stall_timeout=args.stall_timeout,
        bitrate_kbps=args.bitrate_kbps,
        serve=args.serve,
        token=args.token,
        token_file=args.token_file,
        mqtt=args.mqtt,
        webhooks=args.webhooks,
        deadline_ms=args.deadline_ms,
        roi=args.roi,
        min_defect_area=args.min_defect_area,
    )
    try:
        run_stream(opts)
    except StreamError as exc:
        print(f"destseg-runtime: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"destseg-runtime: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("destseg-runtime: aborted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
