"""Real services for the line tests: a runtime process, a Mosquitto broker, an MQTT subscriber, an HTTP receiver.

Everything runs on loopback ports picked free, is waited on through conditions with timeouts
(never sleeps), and is cleaned up by its context manager. The event schema validator lives
here too, so every test that produces real events checks them against runtime/event.schema.json.
"""
from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import pytest

from destseg.images import write_image

REPO = Path(__file__).resolve().parents[1]
MOSQUITTO = "/usr/sbin/mosquitto"
SCHEMA = REPO / "runtime" / "event.schema.json"
WAIT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def square_image(path: Path, squares: Tuple[Tuple[int, int, int], ...]) -> None:
    """A 128 x 128 black frame with white squares (x, y, side), aligned so the 64 x 64 map sees them exactly."""
    image = np.zeros((128, 128, 3), np.uint8)
    for x, y, side in squares:
        image[y: y + side, x: x + side] = 255
    write_image(path, image)


def validate_events(events: Iterable[Dict[str, Any]]) -> None:
    """Every event must match the versioned schema (jsonschema raises with the offending field)."""
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for event in events:
        validator.validate(event)


class Collected:
    """Items appended by a background thread; wait_for() blocks on a condition until a predicate holds."""

    def __init__(self) -> None:
        self.items: List[Any] = []
        self.cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def snapshot(self) -> List[Any]:
        with self.cond:
            return list(self.items)

    def wait_for(self, predicate: Callable[[List[Any]], Any], timeout: float = WAIT_S, what: str = "condition") -> Any:
        with self.cond:
            result = self.cond.wait_for(lambda: predicate(self.items), timeout)
            if not result:
                tail = self.items[-5:]
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last items: {tail}")
            return result


class Runtime:
    """``destseg-runtime`` as a subprocess, its stdout (JSON lines) and stderr (log) collected line by line."""

    def __init__(self, args: List[str], cwd: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "destseg.runtime.cli", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
        self.out, self.err = Collected(), Collected()
        self._readers = [threading.Thread(target=self._read, args=(stream, sink), daemon=True)
                         for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, sink: Collected) -> None:
        for line in stream:
            sink.add(line.rstrip("\n"))

    def events(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.out.snapshot()]

    def frames(self) -> List[Dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "frame"]

    def wait_events(self, predicate: Callable[[List[Dict[str, Any]]], Any], what: str, timeout: float = WAIT_S) -> Any:
        return self.out.wait_for(lambda lines: predicate([json.loads(line) for line in lines]), timeout, what)

    def dashboard_url(self) -> str:
        line = self.err.wait_for(lambda lines: next((l for l in lines if "dashboard at http" in l), None), what="the dashboard's URL")
        return line.split("dashboard at ", 1)[1].split()[0]

    def stop(self, timeout: float = 60) -> int:
        """SIGINT (a clean stop) and the exit status, after both pipes are read to the end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def log(self) -> str:
        return "\n".join(self.err.snapshot())

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def need_mosquitto() -> None:
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"{MOSQUITTO} is missing: make test-deps installs Debian's mosquitto")


class Broker:
    """A Mosquitto broker on a loopback port (the same port again after a restart); no persistence."""

    def __init__(self, folder: Path, port: Optional[int] = None) -> None:
        need_mosquitto()
        self.port = port or free_port()
        self.config = folder / f"mosquitto-{self.port}.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                               "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = Collected()
        threading.Thread(target=Runtime._read, args=(self.proc.stderr, self.log), daemon=True).start()
        try:
            self.log.wait_for(lambda lines: any(" running" in l for l in lines) or self.proc.poll() is not None,
                              what="mosquitto to start")
            assert self.proc.poll() is None, "\n".join(self.log.snapshot())
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a word, as a crashed or unplugged one does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


class Subscriber:
    """A paho-mqtt client subscribed (QoS 1) to TOPIC and TOPIC/status, re-subscribing after every reconnect."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages = Collected()  # (topic, payload text, retained)
        self.subscribed = Collected()
        self.topic = topic
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{port}")
        client.reconnect_delay_set(0.2, 1)
        client.on_connect = lambda c, u, f, reason, p: c.subscribe([(topic, 1), (f"{topic}/status", 1)])
        client.on_subscribe = lambda c, u, mid, codes, p: self.subscribed.add(mid)
        client.on_message = lambda c, u, m: self.messages.add((m.topic, m.payload.decode(), bool(m.retain)))
        client.connect_async("127.0.0.1", port, keepalive=5)
        client.loop_start()
        self.client = client
        self.subscribed.wait_for(len, what="the subscription")

    def frames(self) -> List[int]:
        return [json.loads(p)["frame"] for t, p, _ in self.messages.snapshot() if t == self.topic and json.loads(p)["event"] == "frame"]

    def statuses(self) -> List[str]:
        return [p for t, p, _ in self.messages.snapshot() if t == f"{self.topic}/status"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Receiver:
    """A local HTTP endpoint that records every POSTed JSON body; ``answers`` gives the status per request."""

    def __init__(self, answers: Optional[Callable[[int], int]] = None, hold: Optional[threading.Event] = None) -> None:
        self.bodies = Collected()
        self.requests = Collected()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                count = len(receiver.requests.snapshot())
                receiver.requests.add(json.loads(body))
                if hold is not None:
                    hold.wait(WAIT_S)
                status = answers(count) if answers else 200
                if status == 200:
                    receiver.bodies.add(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/verdicts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def chromium_available() -> Optional[str]:
    """Why the browser tests cannot run here, or None."""
    for binary in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.access(binary, os.X_OK):
            return f"{binary} is missing: make test-deps installs Debian's chromium and chromium-driver"
    return None
