"""The loop: frames from the source, through the backend, to verdicts and outputs, every stage timed.

Everything that can be checked is checked before the camera opens (source URI, outputs and
their encoders, the bundle and its model), so a typo costs a one-line error, not a half-open
pipeline. While running, SIGINT/SIGTERM only set a flag: the loop ends after the current
frame, sends EOS to every output (an MP4 is playable only after it) and writes the profile.
A second signal aborts. A live source that fails or ends is reopened with backoff and counted.
Each event goes to the JSON lines, the line's outputs (MQTT, webhooks) and the dashboard, which
only take references and never make the loop wait; with the dashboard, a file or folder that
ends leaves it serving the results until a signal or --duration.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np

from destseg.overlay import overlay
from destseg.runtime.backends import Backend, choose_backend, open_backend
from destseg.runtime.dashboard import Dashboard, FrameView, check_serve, read_token, source_label
from destseg.runtime.decision import apply_deadline, check_inspection, decide
from destseg.runtime.errors import RuntimeInputError, SourceError, StreamError
from destseg.runtime.events import EventWriter, frame_event
from destseg.runtime.frames import Frame, FrameReader, SourceEnded, SourceLost
from destseg.runtime.gst import has_element, resolve_platform
from destseg.runtime.output_paths import check_output_paths
from destseg.runtime.overrides import ThresholdControl, initial_thresholds
from destseg.runtime.profiler import Profiler, format_summary
from destseg.runtime.publishers import Publisher, make_publishers
from destseg.runtime.reconnect import reopen
from destseg.runtime.sinks import AnomalyFolder, VideoSink, check_sink, open_sink, parse_sink
from destseg.runtime.sources import check_source, open_source

POLL_S = 0.1  # how often a waiting loop looks at the stop flag


@dataclass
class StreamOptions:
    source: str
    model: str  # bundle folder (or a training run for the torch backend)
    backend: str = "auto"
    precision: str = "auto"
    platform: str = "auto"
    width: int = 640
    height: int = 480
    fps: float = 30.0
    realtime: bool = False
    outputs: List[str] = field(default_factory=list)
    headless: bool = False
    events: Optional[str] = None
    save_anomalies: Optional[str] = None
    profile: Optional[str] = None
    profile_csv: Optional[str] = None
    report_every: int = 0
    max_frames: Optional[int] = None
    duration: Optional[float] = None
    threshold: Optional[float] = None
    pixel_threshold: Optional[float] = None
    threads: Optional[int] = None
    device: Optional[str] = None  # OpenVINO's device (CPU, GPU, NPU) or TensorRT's GPU index
    latency_ms: int = 100
    reconnect_delay: float = 0.5
    reconnect_max_delay: float = 10.0
    stall_timeout: float = 10.0
    bitrate_kbps: int = 4000
    serve: Optional[str] = None  # HOST:PORT of the dashboard
    token: Optional[str] = None
    token_file: Optional[str] = None
    mqtt: List[str] = field(default_factory=list)
    webhooks: List[str] = field(default_factory=list)
    deadline_ms: Optional[float] = None
    roi: Optional[str] = None
    min_defect_area: Optional[int] = None


def _stderr(message: str) -> None:
    print(f"destseg-runtime: {message}", file=sys.stderr, flush=True)


def check_options(opts: StreamOptions) -> List[str]:
    """Validate the numbers and return the outputs to open (display unless headless or given)."""
    positive = {"--width": opts.width, "--height": opts.height, "--fps": opts.fps, "--bitrate": opts.bitrate_kbps,
                "--stall-timeout": opts.stall_timeout}
    optional = {"--max-frames": opts.max_frames, "--duration": opts.duration, "--threads": opts.threads}
    for flag, value in list(positive.items()) + [(k, v) for k, v in optional.items() if v is not None]:
        if value <= 0:
            raise RuntimeInputError(f"{flag} must be positive, got {value}")
    if opts.report_every < 0 or opts.reconnect_delay < 0 or opts.reconnect_max_delay < 0 or opts.latency_ms < 0:
        raise RuntimeInputError("--report-every, --reconnect-delay, --reconnect-max-delay and --latency must not be negative")
    outputs = list(opts.outputs) or ([] if opts.headless else ["display"])
    if opts.headless and "display" in outputs:
        raise RuntimeInputError("--headless and --output display contradict each other; drop one")
    for flag, value in (("--threshold", opts.threshold), ("--pixel-threshold", opts.pixel_threshold)):
        if value is not None and not math.isfinite(value):
            raise RuntimeInputError(f"{flag} must be a number, got {value}")
    return outputs


def needs_full_frame(outputs: List[str], opts: StreamOptions) -> bool:
    """Whether anything shows or keeps the full-resolution picture: outputs, saved anomalies, the
    dashboard. Verdicts and events alone need only the model's input, so the source then skips
    the full-resolution branch (its copy into Python is the largest hand-off at 1080p)."""
    return bool(outputs) or opts.save_anomalies is not None or opts.serve is not None


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (the loop then finishes cleanly); a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def stop_after(seconds: Optional[float], stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` after ``seconds`` (--duration): like a signal, it also ends a wait for a lost camera."""
    timer = threading.Timer(seconds, stop.set) if seconds is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


class Stream:
    """One run: a backend, a source (reopened when live), outputs, events and the profiler."""

    def __init__(self, opts: StreamOptions, log: Callable[[str], None] = _stderr) -> None:
        self.opts = opts
        self.log = log
        outputs = check_options(opts)
        source = check_source(opts.source)
        check_output_paths(opts, source.kind, source.location)
        self.live_source = source.live  # a camera or stream: reopened when lost
        token = read_token(opts.token, opts.token_file)
        if opts.serve:
            check_serve(opts.serve, token)
        publishers = make_publishers(opts.mqtt, opts.webhooks, log)
        self.platform = resolve_platform(opts.platform)
        for text in outputs:
            choice = check_sink(parse_sink(text), self.platform, has_element)
            if choice is not None and choice.note:
                log(f"output {text}: {choice.note}")
        self.outputs = outputs
        name, why = choose_backend(opts.model, opts.backend)
        self.backend: Backend = open_backend(name, opts.model, opts.precision, threads=opts.threads, device=opts.device)
        log(f"backend {name} ({why}): {self.backend.detail}")
        self.stop = threading.Event()
        self.profiler: Optional[Profiler] = None
        self.sinks: List[VideoSink] = []
        self.events: Optional[EventWriter] = None
        self.anomalies: Optional[AnomalyFolder] = None
        self.index = 0
        self.failures = 0  # source failures since the last good frame (drives the backoff)
        self.dropped_before = 0  # dropped by earlier (reopened) readers
        self.first_capture: Optional[float] = None
        self.reader: Optional[FrameReader] = None
        self.last_frame = 0.0  # monotonic time of the last frame (or of opening the source)
        self.running = False
        self.late = 0
        self.publishers: List[Publisher] = []
        self.dashboard: Optional[Dashboard] = None
        try:
            thresholds = initial_thresholds(opts.model, self.backend.thresholds, opts.threshold, opts.pixel_threshold, log)
            self.control = ThresholdControl(Path(opts.model), thresholds, log)
            self.threshold, self.pixel_threshold = thresholds.image, thresholds.pixel
            if self.threshold is None:
                log("no image threshold (the model was never evaluated): scores only, no OK/NG; pass --threshold to set one")
            self.inspection = check_inspection(opts.roi, opts.min_defect_area, opts.deadline_ms, self.backend.image_size,
                                               self.pixel_threshold)
            if opts.serve:
                self.dashboard = self._open_dashboard(opts.serve, token, source_label(source.kind, source.location))
            self.publishers = [p.start() for p in publishers]
        except BaseException:
            self._close_line()
            self.backend.close()
            raise

    def _open_dashboard(self, address: str, token: Optional[str], source: str) -> Dashboard:
        b, i = self.backend, self.inspection
        info = {"bundle": Path(self.opts.model).resolve().name, "source": source, "backend": b.name, "precision": b.precision,
                "image_size": b.image_size, "inspection": {"roi": i.roi is not None, "roi_fraction": i.roi_fraction,
                                                          "min_defect_area": i.min_defect_area or None, "deadline_ms": i.deadline_ms}}
        return Dashboard(address, token, info, self.live_status, self.control, i.roi, self.log)

    def live_status(self) -> Dict[str, Any]:
        """What the dashboard asks of the loop (from its own thread: plain reads, no locks)."""
        reader, profiler = self.reader, self.profiler
        return {"running": self.running, "frames": self.index, "late": self.late,
                "dropped": self.dropped_before + (reader.dropped() if reader is not None else 0),
                "reconnects": profiler.reconnects if profiler is not None else 0,
                "outputs": [p.stats() for p in self.publishers]}

    def _emit(self, event: Dict[str, Any], view: Optional[FrameView] = None) -> None:
        """One event to the JSON lines, every line output and the dashboard."""
        if self.events is not None:
            self.events.write(event)
        for publisher in self.publishers:
            publisher.put(event)
        if self.dashboard is not None:
            self.dashboard.hub.publish(event, view)

    def _take_thresholds(self) -> None:
        """Apply the dashboard's threshold changes from the next frame on, each logged as an event first."""
        self.threshold, self.pixel_threshold, changes = self.control.take(self.index)
        for change in changes:
            self._emit(change)

    def _close_line(self) -> None:
        """Drain and stop the MQTT/webhook outputs (a bounded wait each), then the dashboard."""
        for publisher in self.publishers:
            publisher.close()
        if self.dashboard is not None:
            self.dashboard.close()

    def _open_source(self) -> FrameReader:
        o = self.opts
        return open_source(o.source, self.backend.image_size, self.platform, o.width, o.height, o.fps, o.realtime,
                           o.latency_ms, full_frame=needs_full_frame(self.outputs, o), inference_threads=o.threads)

    def run(self) -> Dict[str, Any]:
        """Stream until the source ends, a limit is reached or a signal arrives; returns the profile summary."""
        o = self.opts
        try:
            self.reader = self._open_source()
            self.last_frame = time.monotonic()
        except BaseException:
            self._close_line()
            self.backend.close()
            raise
        self.profiler = Profiler(csv_path=o.profile_csv)
        failure: Optional[str] = None
        try:
            self.events = EventWriter(o.events) if o.events else EventWriter() if o.headless else None
            self.anomalies = AnomalyFolder(o.save_anomalies) if o.save_anomalies else None
            with stop_on_signals(self.stop), stop_after(o.duration, self.stop):
                self.running = True
                self._loop()
                self.running = False
                if self.dashboard is not None and not self._done():
                    self.log(f"source ended; the dashboard at {self.dashboard.url} stays up until Ctrl-C")
                    while not self.stop.wait(POLL_S):
                        self._take_thresholds()
        except (StreamError, RuntimeInputError) as exc:
            if self.index == 0 and isinstance(exc, RuntimeInputError):
                raise  # nothing ran: a plain input error (exit 2), after the cleanup below
            failure = str(exc)
        finally:
            self.running = False
            if self.reader is not None:
                self.profiler.dropped = self.dropped_before + self.reader.dropped()
                self.reader.close()
            failure = "; ".join(m for m in (failure, self._close_sinks()) if m) or None
            self._close_line()
            if self.events is not None:
                self.events.close()
            summary = self.summary()
            self.profiler.close(o.profile, summary)
            self.backend.close()
            if self.index:
                self.log(format_summary(summary))
        if failure:
            raise StreamError(failure)
        return summary

    def summary(self) -> Dict[str, Any]:
        assert self.profiler is not None
        b = self.backend
        return self.profiler.summary(
            source=self.opts.source, platform=self.platform, backend=b.name, precision=b.precision, detail=b.detail,
            image_size=b.image_size, threshold=self.threshold, pixel_threshold=self.pixel_threshold, outputs=self.outputs,
            late=self.late, line_outputs=[p.stats() for p in self.publishers],
        )

    def _done(self) -> bool:
        o = self.opts
        return self.stop.is_set() or (o.max_frames is not None and self.index >= o.max_frames)

    def _loop(self) -> None:
        while self.reader is not None and not self._done():
            try:
                frame = self._read(self.reader)
            except (SourceEnded, SourceLost) as exc:
                lost = str(exc) or "the stream ended"
                if self.index == 0:
                    why = "it holds no frames (empty or truncated?)" if isinstance(exc, SourceEnded) else lost
                    raise SourceError(f"cannot read {self.opts.source}: {why}") from exc
                if not self.live_source and isinstance(exc, SourceEnded):
                    return
                if not self.live_source:
                    raise StreamError(f"{self.opts.source} failed after {self.index} frames: {lost}") from exc
                self._reconnect(lost)
                continue
            if frame is not None:
                self.failures = 0
                self._handle(frame, self.reader)

    def _read(self, reader: FrameReader) -> Optional[Frame]:
        """The next frame or None; a source silent for --stall-timeout counts as lost (a USB camera
        can freeze without an error, and a failing demuxer does not always reach the bus)."""
        frame = reader.read(POLL_S)
        now = time.monotonic()
        if frame is not None:
            self.last_frame = now
        elif now - self.last_frame > self.opts.stall_timeout:
            raise SourceLost(f"no frame for {self.opts.stall_timeout:g} s")
        return frame

    def _reconnect(self, reason: str) -> None:
        """Close the lost source and reopen it with backoff (self.reader is None if stopped meanwhile)."""
        assert self.profiler is not None and self.reader is not None
        self.dropped_before += self.reader.dropped()
        self.reader.close()
        self.reader = None
        self.profiler.reconnects += 1
        o = self.opts
        self.reader, self.failures = reopen(self._open_source, self.stop, reason, self.log, o.reconnect_delay,
                                            o.reconnect_max_delay, self.failures)
        if self.reader is not None:
            self.last_frame = time.monotonic()
            self.log(f"source {o.source} reopened")

    def _handle(self, frame: Frame, reader: FrameReader) -> None:
        """One frame: infer, verdict, outputs (each with the overlay drawn at its size), event, profile.

        The overlay is drawn only for what shows it (an output, a saved NG frame) and at that
        output's size; the dashboard draws its own, only when a browser asks."""
        assert self.profiler is not None
        self._take_thresholds()
        if not self.sinks and self.outputs:  # once, at the first frame's size: not a per-frame stage
            height, width = frame.size
            self.sinks = [open_sink(o, width, height, reader.fps, self.platform, self.opts.bitrate_kbps) for o in self.outputs]
        t0 = time.perf_counter()
        batch = frame.model_rgb[np.newaxis]
        t1 = time.perf_counter()
        maps, scores = self.backend.infer(batch)
        timings = self.backend.last_timings()
        t2 = time.perf_counter()
        score = float(scores[0])
        result, defect_area = decide(score, maps[0], self.threshold, self.pixel_threshold, self.inspection, frame.size)
        full_size = (frame.size[1], frame.size[0])
        save = self.anomalies is not None and result == "NG"
        sizes = {sink.size for sink in self.sinks} | ({full_size} if save else set())
        shown = {size: overlay(frame.rgb, maps[0], score, self.threshold, self.pixel_threshold, verdict=result, size=size)
                 for size in sizes}
        t3 = time.perf_counter()
        if self.first_capture is None:
            self.first_capture = frame.captured_at
        timestamp = frame.captured_at - self.first_capture if reader.live else self.index / reader.fps
        for sink in self.sinks:
            sink.write(shown[sink.size], timestamp)
        if save:
            self.anomalies.save(self.index, frame.rgb, shown[full_size])
        t4 = time.perf_counter()
        stages = {
            "capture": frame.capture_ms,
            "preprocess": frame.convert_ms + (t1 - t0) * 1e3,
            "h2d": timings.get("h2d", 0.0),
            "infer": timings.get("infer", (t2 - t1) * 1e3),
            "d2h": timings.get("d2h", 0.0),
            "postprocess": (t3 - t2) * 1e3,
            "output": (t4 - t3) * 1e3,
            "end_to_end": frame.capture_ms + frame.convert_ms + (t4 - t0) * 1e3,
        }
        fields: Dict[str, Any] = {"threshold": self.threshold, "pixel_threshold": self.pixel_threshold}
        if self.inspection.regional:
            fields.update(defect_area=defect_area, min_defect_area=self.inspection.min_defect_area or None,
                          roi=self.inspection.roi is not None)
        event = frame_event(self.index, score, result, frame.captured_at, frame.pts_s, stages, frame.name, **fields)
        self.late += apply_deadline(event, frame.captured_at, self.inspection.deadline_ms)
        view = None if self.dashboard is None else FrameView(
            self.index, frame.rgb, maps[0], score, self.threshold, self.pixel_threshold, event["verdict"])
        self._emit(event, view)
        self.profiler.record(self.index, frame.pts_s, stages)
        self.index += 1
        every = self.opts.report_every
        if every and self.index % every == 0:
            self.profiler.dropped = self.dropped_before + reader.dropped()
            self.log(format_summary(self.summary()))

    def _close_sinks(self) -> Optional[str]:
        """EOS to every output and wait for each to finish; the first error, if any."""
        errors = []
        for sink in self.sinks:
            error = sink.close()
            if error:
                errors.append(f"output {sink.name}: {error}")
        self.sinks = []
        return "; ".join(errors) or None


def run_stream(opts: StreamOptions, log: Callable[[str], None] = _stderr) -> Dict[str, Any]:
    """Validate everything, then stream; returns the profile summary (also written to opts.profile)."""
    return Stream(opts, log).run()
