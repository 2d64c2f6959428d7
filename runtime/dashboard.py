"""The live web dashboard (``--serve HOST:PORT``): the line's view, served by the runtime process itself.

``dashboard.html`` beside this file is the page; everything it shows comes from JSON endpoints a
SCADA screen can poll as well:

- ``GET /`` the page; ``GET /stream.mjpg`` the annotated stream (MJPEG, at most ``STREAM_FPS``);
  ``GET /frame.jpg`` the latest frame; ``GET /roi.png`` the inspection mask's shade;
- ``GET /api/status`` counts, FPS, dropped frames, reconnects, late verdicts, per-stage p50/p99,
  the histogram of recent scores, thresholds, inspection settings, outputs;
- ``GET /api/events?since=N[&limit=M]`` the events from sequence number N (``next`` in the answer
  is where to continue); ``GET /api/gallery`` and ``/gallery/ID.jpg`` (``ID_frame.jpg``) the latest NG frames;
- ``POST /api/threshold`` ``{"image": X, "pixel": Y}`` or ``{"reset": true}`` (the bundle's).

The frame loop never waits for the dashboard: it hands over references to each frame, its map
and event (:meth:`DashboardHub.publish`, a lock held for microseconds); the overlay is drawn and
JPEG-encoded in the HTTP threads, only for a client that watches, once per frame however many
watch. It binds 127.0.0.1 by default; any other address needs a token, and every request that
changes state must carry it (``Authorization: Bearer TOKEN``). The page and the API never show
a file system path: the bundle by its folder name, the source by its kind.
"""
from __future__ import annotations

import collections
import contextlib
import hmac
import http.server
import ipaddress
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from destseg.overlay import overlay
from destseg.runtime.errors import RuntimeInputError
from destseg.runtime.overrides import ThresholdControl
from destseg.latency import latency_statistics
from destseg.runtime.profiler import STAGES

PAGE = Path(__file__).with_name("dashboard.html")
EVENTS_KEPT = 6000  # the timeline's memory: over three minutes at 30 FPS
EVENTS_PER_ANSWER = 1000
GALLERY_SIZE = 12
LATENCY_FRAMES = 300  # the live p50/p99 describe this many recent frames
HISTOGRAM_FRAMES = 1000
HISTOGRAM_BINS = 40
FPS_WINDOW_S = 5.0
STREAM_FPS = 15.0  # the MJPEG stream's ceiling: enough to watch, light on a Jetson's CPU
REPEAT_S = 1.0  # a still stream repeats its last frame this often
JPEG_QUALITY = 80
MIN_TOKEN_LENGTH = 12
MAX_BODY = 4096


@dataclass(frozen=True)
class FrameView:
    """What the dashboard may draw of one frame: references, nothing copied or encoded by the loop."""

    frame: int
    rgb: np.ndarray
    anomaly_map: np.ndarray
    score: float
    threshold: Optional[float]
    pixel_threshold: Optional[float]
    verdict: Optional[str]


def render(view: FrameView) -> bytes:
    """The view's overlay as JPEG bytes."""
    shown = overlay(view.rgb, view.anomaly_map, view.score, view.threshold, view.pixel_threshold, verdict=view.verdict)
    return encode_jpeg(shown)


def encode_jpeg(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def roi_shade(roi: np.ndarray) -> bytes:
    """The mask as a PNG the page lays over the stream: ignored areas dimmed, inspected ones clear."""
    rgba = np.zeros(roi.shape + (4,), np.uint8)
    rgba[..., 3] = np.where(roi, 0, 150).astype(np.uint8)
    ok, data = cv2.imencode(".png", rgba)
    return data.tobytes()


def _score_histogram(scores: np.ndarray, threshold: Optional[float]) -> Dict[str, Any]:
    finite = scores[np.isfinite(scores)]
    highest = max([0.0] + ([float(finite.max())] if finite.size else []) + ([float(threshold)] if threshold is not None else []))
    top = highest * 1.1 if highest > 0 else 1.0  # bins follow the data: good models score far below 1
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS, range=(0.0, top))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist(), "frames": int(finite.size)}


class DashboardHub:
    """The state shared by the frame loop (publish) and the HTTP threads (everything else)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: Deque[Tuple[int, Dict[str, Any]]] = collections.deque(maxlen=EVENTS_KEPT)
        self._next_seq = 0
        self._frame_times: Deque[float] = collections.deque(maxlen=1024)
        self.counts = {"OK": 0, "NG": 0, "UNKNOWN": 0}
        self._latest: Optional[FrameView] = None
        self._gallery: Deque[Tuple[FrameView, Dict[str, Any]]] = collections.deque(maxlen=GALLERY_SIZE)
        self._render_lock = threading.Lock()
        self._jpeg: Tuple[int, bytes] = (-1, b"")
        self._gallery_jpegs: Dict[Tuple[int, str], bytes] = {}
        # What the last few /api/gallery answers listed stays drawable after newer NG frames push it out.
        self._listed: Deque[Dict[int, FrameView]] = collections.deque(maxlen=4)
        self.closed = False
        self.clients = 0
        self.frames_sent = 0

    # --- the frame loop's side: references under a lock, nothing else
    def publish(self, event: Dict[str, Any], view: Optional[FrameView] = None) -> None:
        with self._cond:
            self._events.append((self._next_seq, event))
            self._next_seq += 1
            if event.get("event") == "frame":
                self.counts[event["verdict"] if event["verdict"] in ("OK", "NG") else "UNKNOWN"] += 1
                self._frame_times.append(time.monotonic())
            if view is not None:
                self._latest = view
                if view.verdict == "NG":
                    self._gallery.append((view, event))
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # --- the HTTP threads' side
    def events(self, since: int, limit: int) -> Dict[str, Any]:
        """Events from sequence number ``since``; ``next`` continues, ``missed`` counts those the ring lost meanwhile."""
        with self._cond:
            kept = list(self._events)
            next_seq = self._next_seq
        first = kept[0][0] if kept else next_seq
        since = min(max(since, 0), next_seq)
        start = max(since, first)
        chosen = kept[start - first: start - first + limit]
        return {"events": [e for _, e in chosen], "next": start + len(chosen), "missed": start - since}

    @property
    def next_seq(self) -> int:
        with self._cond:
            return self._next_seq

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Counts a stream client while it is connected."""
        with self._cond:
            self.clients += 1
        try:
            yield
        finally:
            with self._cond:
                self.clients -= 1

    def sent(self, pause_s: float) -> None:
        """Count a streamed frame, then pause ``pause_s`` (the stream's rate cap) unless closing."""
        with self._cond:
            self.frames_sent += 1
            self._cond.wait_for(lambda: self.closed, pause_s)

    def recent_frames(self, count: int) -> List[Dict[str, Any]]:
        with self._cond:
            kept = list(self._events)  # a C-level copy: the lock the frame loop needs is held for microseconds
        frames = [e for _, e in kept if e.get("event") == "frame"]
        return frames[-count:]

    def fps(self) -> Optional[float]:
        with self._cond:
            times = list(self._frame_times)
        now = time.monotonic()
        recent = [t for t in times if now - t <= FPS_WINDOW_S]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return round((len(recent) - 1) / (recent[-1] - recent[0]), 2)

    def next_jpeg(self, last: int, timeout_s: float) -> Tuple[int, Optional[bytes]]:
        """The latest frame as JPEG once it is newer than ``last`` (or (last, None) after ``timeout_s``)."""
        with self._cond:
            self._cond.wait_for(lambda: self.closed or (self._latest is not None and self._latest.frame != last), timeout_s)
            view = self._latest
        if self.closed or view is None or view.frame == last:
            return last, None
        return view.frame, self.latest_jpeg(view)

    def latest_jpeg(self, view: Optional[FrameView] = None) -> Optional[bytes]:
        """Encode ``view`` (default the latest) once, however many clients ask."""
        if view is None:
            with self._cond:
                view = self._latest
            if view is None:
                return None
        with self._render_lock:
            if self._jpeg[0] != view.frame:
                self._jpeg = (view.frame, render(view))
            return self._jpeg[1]

    def gallery(self) -> List[Dict[str, Any]]:
        with self._cond:
            entries = list(self._gallery)
            self._listed.append({view.frame: view for view, _ in entries})
        return [{"id": view.frame, "frame": view.frame, "score": event.get("score"), "captured_at": event.get("captured_at"),
                 "defect_area": event.get("defect_area"), "file": event.get("file")} for view, event in reversed(entries)]

    def gallery_jpeg(self, frame: int, kind: str) -> Optional[bytes]:
        """An NG frame's overlay (kind "overlay") or the frame itself ("frame"), encoded on first request."""
        with self._cond:
            views = {frame: view for listed in self._listed for frame, view in listed.items()}
            views.update((view.frame, view) for view, _ in self._gallery)
        view = views.get(frame)
        if view is None:
            return None
        with self._render_lock:
            self._gallery_jpegs = {k: v for k, v in self._gallery_jpegs.items() if k[0] in views}
            key = (frame, kind)
            if key not in self._gallery_jpegs:
                self._gallery_jpegs[key] = render(view) if kind == "overlay" else encode_jpeg(view.rgb)
            return self._gallery_jpegs[key]

    def live(self, threshold: Optional[float]) -> Dict[str, Any]:
        """The figures computed from recent events: counts, FPS, latency percentiles, histogram."""
        frames = self.recent_frames(max(LATENCY_FRAMES, HISTOGRAM_FRAMES))
        latency: Dict[str, Dict[str, float]] = {}
        timed = frames[-LATENCY_FRAMES:]
        if timed:
            for stage in STAGES:
                values = np.array([e["ms"].get(stage) for e in timed if e["ms"].get(stage) is not None], dtype=np.float64)
                if values.size:
                    stats = latency_statistics(values)
                    latency[stage] = {"p50": stats["median"], "p99": stats["p99"]}
        scores = np.array([e["score"] if e["score"] is not None else np.nan for e in frames[-HISTOGRAM_FRAMES:]], dtype=np.float64)
        with self._cond:
            counts = dict(self.counts)
        return {"counts": counts, "fps": self.fps(), "latency_ms": latency, "latency_frames": len(timed),
                "histogram": _score_histogram(scores, threshold),
                "stream": {"clients": self.clients, "frames_sent": self.frames_sent}}


def parse_address(text: str) -> Tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT, or :PORT for 127.0.0.1); port 0 picks a free one."""
    parsed = urllib.parse.urlsplit(f"//{text}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if port is None:
        raise RuntimeInputError(f"bad --serve {text}; write HOST:PORT, e.g. 127.0.0.1:8080 (this machine only) or 0.0.0.0:8080 with --token-file")
    return parsed.hostname or "127.0.0.1", port


def check_serve(address: str, token: Optional[str]) -> Tuple[str, int]:
    """(host, port) of --serve, refused beyond loopback without a token."""
    host, port = parse_address(address)
    if not is_loopback(host) and token is None:
        raise RuntimeInputError(f"--serve {address} listens beyond this machine; pass --token-file FILE (or --token) "
                                f"so that only its holders can change thresholds, or serve on 127.0.0.1")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token: Optional[str], token_file: Optional[str]) -> Optional[str]:
    """The token from --token or the first line of --token-file (a file keeps it out of `ps`)."""
    if token_file is not None:
        try:
            lines = Path(token_file).read_text().splitlines()
        except OSError as exc:
            raise RuntimeInputError(f"cannot read --token-file {token_file}: {exc.strerror}") from exc
        token = lines[0].strip() if lines else ""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise RuntimeInputError(f"the dashboard token must be at least {MIN_TOKEN_LENGTH} characters; "
                                f"make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > token.txt")
    return token


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # an MJPEG client must not hold up the runtime's exit
    block_on_close = False
    dashboard: "Dashboard"


class _Server6(_Server):
    address_family = socket.AF_INET6


class Dashboard:
    """The HTTP server on its own thread, and what it serves."""

    def __init__(self, address: str, token: Optional[str], info: Dict[str, Any], status: Callable[[], Dict[str, Any]],
                 control: ThresholdControl, roi: Optional[np.ndarray], log: Callable[[str], None]) -> None:
        host, port = check_serve(address, token)
        self.loopback = is_loopback(host)
        self.token = token
        self.info = dict(info, token_required=token is not None)
        self.status_source = status
        self.control = control
        self.roi_png = roi_shade(roi) if roi is not None else None
        self.hub = DashboardHub()
        self.page = PAGE.read_bytes()
        self.log = log
        try:
            self.server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        except OSError as exc:
            raise RuntimeInputError(f"cannot serve the dashboard on {address}: {exc.strerror}; pick another port") from exc
        self.server.dashboard = self
        self.port = self.server.server_address[1]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="destseg-dashboard", daemon=True)
        self._thread.start()
        log(f"dashboard at {self.url}" + (" (state changes need the token)" if token else ""))

    def status(self) -> Dict[str, Any]:
        thresholds = self.control.snapshot()
        return {**self.info, **self.status_source(), **self.hub.live(thresholds["image"]), "thresholds": thresholds,
                "events_next": self.hub.next_seq}

    def authorised(self, header: Optional[str]) -> bool:
        if self.token is None:
            return True
        supplied = (header or "").strip()
        supplied = supplied[len("Bearer "):].strip() if supplied.startswith("Bearer ") else supplied
        return hmac.compare_digest(supplied.encode(), self.token.encode())

    def close(self) -> None:
        self.hub.close()
        self.server.shutdown()
        self.server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "destseg-runtime"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: the runtime's stderr is for the line, not for every poll."""

    @property
    def dashboard(self) -> Dashboard:
        return self.server.dashboard

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                             "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, code: int = 200) -> None:
        self._send(code, json.dumps(obj, allow_nan=False).encode(), "application/json")

    def _error(self, code: int, message: str) -> None:
        self._json({"error": message}, code)

    def _host_allowed(self) -> bool:
        """On a loopback address only loopback names: a web page cannot rebind its own name to us."""
        if not self.dashboard.loopback:
            return True
        host = urllib.parse.urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        return is_loopback(host)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._host_allowed():
            return self._error(403, "unexpected Host header")
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        d = self.dashboard
        route = url.path
        if route in ("/", "/index.html"):
            return self._send(200, d.page, "text/html; charset=utf-8")
        if route == "/api/status":
            return self._json(d.status())
        if route == "/api/events":
            try:
                since, limit = int(query.get("since", 0)), min(int(query.get("limit", EVENTS_PER_ANSWER)), EVENTS_PER_ANSWER)
            except ValueError:
                return self._error(400, "since and limit must be integers")
            return self._json(d.hub.events(since, max(0, limit)))
        if route == "/api/gallery":
            return self._json({"ng": d.hub.gallery()})
        if route == "/stream.mjpg":
            return self._stream()
        if route == "/frame.jpg":
            jpeg = d.hub.latest_jpeg()
            return self._send(200, jpeg, "image/jpeg") if jpeg else self._error(404, "no frame yet")
        if route == "/roi.png":
            return self._send(200, d.roi_png, "image/png") if d.roi_png else self._error(404, "no --roi mask")
        if route.startswith("/gallery/") and route.endswith(".jpg"):
            name = route[len("/gallery/"): -len(".jpg")]
            kind = "frame" if name.endswith("_frame") else "overlay"
            ident = name[: -len("_frame")] if kind == "frame" else name
            jpeg = d.hub.gallery_jpeg(int(ident), kind) if ident.isdigit() else None
            return self._send(200, jpeg, "image/jpeg") if jpeg else self._error(404, "not in the gallery (it keeps the latest NG frames)")
        return self._error(404, "not found")

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_allowed():
            return self._error(403, "unexpected Host header")
        d = self.dashboard
        if not d.authorised(self.headers.get("Authorization")):
            return self._error(401, "this dashboard needs its token to change anything (Authorization: Bearer TOKEN)")
        if self.headers.get_content_type() != "application/json":
            return self._error(415, "send application/json")  # also keeps other sites' plain forms out
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._error(413, "request too large")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            return self._error(400, "the body is not JSON")
        if urllib.parse.urlsplit(self.path).path != "/api/threshold" or not isinstance(body, dict):
            return self._error(404, "not found")
        try:
            result = d.control.reset() if body.get("reset") else d.control.set(body.get("image"), body.get("pixel"))
        except ValueError as exc:
            return self._error(400, str(exc))
        return self._json(result)

    def _stream(self) -> None:
        """multipart/x-mixed-replace: one JPEG part per new frame, at most STREAM_FPS a second.

        Browsers show a part only once the next one arrives, so without a new frame for a second
        the last one is sent again (already encoded): a still line, or a finished folder, stays visible.
        """
        hub = self.dashboard.hub
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        last, period, jpeg = -1, 1.0 / STREAM_FPS, None
        with hub.watching():
            try:
                self.wfile.write(b"--frame\r\n")
                while not hub.closed:
                    started = time.monotonic()
                    last, new = hub.next_jpeg(last, REPEAT_S)
                    jpeg = new or jpeg
                    if jpeg is None:
                        continue
                    self.wfile.write(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n--frame\r\n")
                    self.wfile.flush()
                    hub.sent(max(0.0, period - (time.monotonic() - started)))
            except (BrokenPipeError, ConnectionResetError):
                pass


def source_label(kind: str, location: str) -> str:
    """The source as the page shows it: its kind, never a path or a URL with credentials."""
    labels = {"v4l2": "USB camera", "csi": "CSI camera", "rtsp": "RTSP stream", "uri": "video file or URL", "folder": "image folder"}
    return f"test pattern {location}" if kind == "test" else labels.get(kind, kind)

