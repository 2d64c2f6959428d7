"""Verdicts to the line: every event to MQTT brokers (``--mqtt``) and HTTP endpoints (``--webhook``).

Each output has its own bounded queue and worker thread. The frame loop only appends to the
queue (microseconds, never a network call), so a slow or dead broker never stalls the
pipeline: when a queue is full its oldest message is dropped and counted, since the line needs
the current part's verdict more than one from minutes ago. While a broker or endpoint is away,
events wait in that queue. Messages leave in order, once each while the connection holds; one that was in flight when a connection broke is sent again and
counted as retried. At exit the queues get a few seconds to drain; what is still queued then is
counted as dropped. The counts go to the profile and the dashboard.

MQTT (paho-mqtt): QoS 1 on TOPIC, and a retained ``online`` / ``offline`` on TOPIC/status with
``offline`` as the last will, so a PLC gateway sees a runtime that died. At most
``MQTT_WINDOW`` messages are unacknowledged at a time. Webhooks: one HTTP POST of the event JSON
per event; a connection error, timeout or 5xx is retried with backoff, another 4xx is dropped.
"""
from __future__ import annotations

import collections
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Deque, Dict, List, Optional, Set

from destseg.runtime.errors import RuntimeInputError

QUEUE_SIZE = 1000  # messages kept per output while it cannot keep up
DRAIN_S = 5.0  # how long closing waits for queued messages to leave
MQTT_WINDOW = 100  # unacknowledged QoS 1 messages at a time
MQTT_KEEPALIVE_S = 10  # a dead broker is noticed within about 1.5 x this
MQTT_RECONNECT_S = (0.5, 8.0)  # first and longest wait between reconnect attempts (paho doubles it)
WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_RETRY_S = (0.2, 5.0)


class Publisher:
    """A bounded queue of events and the counters every output reports; subclasses deliver."""

    kind = "output"

    def __init__(self, target: str, log: Callable[[str], None], queue_size: int = QUEUE_SIZE) -> None:
        self.target = target  # host:port[/topic], never credentials
        self.log = log
        self._queue: Deque[Dict[str, Any]] = collections.deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: Optional[float] = None  # monotonic end of the drain, once closing
        self.sent = 0
        self.dropped = 0
        self.retried = 0
        self.reconnects = 0
        self.connected = False
        self._thread = threading.Thread(target=self._run, name=f"destseg-{self.kind}", daemon=True)

    def start(self) -> "Publisher":
        self._thread.start()
        return self

    def put(self, event: Dict[str, Any]) -> None:
        """Queue one event (never blocks; drops the oldest when full)."""
        with self._cond:
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event)
            self._cond.notify()

    def _next(self) -> Optional[Dict[str, Any]]:
        """The oldest queued event, waiting for one; None once closing and empty."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            return self._queue.popleft() if self._queue else None

    def _wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` (while closing, at most until the drain ends); True once the drain time is over."""
        with self._cond:
            if self._deadline is not None:
                seconds = min(seconds, self._deadline - time.monotonic())
            if seconds > 0:
                self._cond.wait(seconds)
            return self._deadline is not None and time.monotonic() >= self._deadline

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def stats(self) -> Dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "connected": self.connected, "sent": self.sent,
                "dropped": self.dropped, "retried": self.retried, "reconnects": self.reconnects, "pending": self.pending()}

    def _run(self) -> None:
        raise NotImplementedError

    def close(self, drain_s: float = DRAIN_S) -> None:
        """Let queued messages leave for up to ``drain_s``, then stop; what is left counts as dropped."""
        deadline = time.monotonic() + drain_s
        with self._cond:
            self._closing, self._deadline = True, deadline
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._finish(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = len(self._queue) + self._unacknowledged()
            self._queue.clear()
        if left:
            self.dropped += left
            self.log(f"{self.kind} {self.target}: {left} messages not delivered at exit")

    def _unacknowledged(self) -> int:
        return 0

    def _finish(self, seconds: float) -> None:
        """Output-specific shutdown (MQTT: the retained offline status, disconnect)."""


def _host_port(parsed: urllib.parse.SplitResult, text: str, flag: str, default_port: int, example: str) -> tuple:
    try:
        port = parsed.port or default_port
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        raise RuntimeInputError(f"bad {flag} {text}; write {example}")
    if parsed.username or parsed.password:
        raise RuntimeInputError(f"{flag} {text}: credentials in the URL are not supported (they would show in logs and "
                                f"the process list); use a broker or endpoint on the line network without them")
    return parsed.hostname, port


class MqttPublisher(Publisher):
    """``mqtt://HOST[:PORT]/TOPIC``: QoS 1 events on TOPIC, retained status with a last will on TOPIC/status."""

    kind = "mqtt"

    def __init__(self, url: str, log: Callable[[str], None], queue_size: int = QUEUE_SIZE) -> None:
        parsed = urllib.parse.urlsplit(url)
        example = "mqtt://HOST[:PORT]/TOPIC, e.g. mqtt://10.0.0.2:1883/line1/verdicts"
        if parsed.scheme != "mqtt":
            raise RuntimeInputError(f"bad --mqtt {url}; write {example} (plain TCP; mqtts is not supported)")
        host, port = _host_port(parsed, url, "--mqtt", 1883, example)
        topic = parsed.path.lstrip("/")
        if not topic or "+" in topic or "#" in url or parsed.query:
            raise RuntimeInputError(f"bad --mqtt {url}: needs a topic without wildcards; write {example}")
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise RuntimeInputError("--mqtt needs paho-mqtt: pip install 'destseg-edge[runtime]' (or pip install paho-mqtt)") from exc
        super().__init__(f"{host}:{port}/{topic}", log, queue_size)
        self.topic, self.status_topic = topic, f"{topic}/status"
        self._mqtt = mqtt
        self._host, self._port = host, port
        self._outstanding: Set[int] = set()  # mids sent, not yet acknowledged
        self._acked_early: Set[int] = set()  # acknowledged before publish() returned
        self._status_mids: Set[int] = set()
        self._ever_connected = False
        self._ready = False  # see _next_ready
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"destseg-{socket.gethostname()}-{os.getpid()}")
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(*MQTT_RECONNECT_S)
        client.max_inflight_messages_set(MQTT_WINDOW + 2)  # our window and the status messages: paho never holds any back
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    def start(self) -> "MqttPublisher":
        # connect_async: a broker that is down now is connected to when it comes up, without blocking the start.
        self._client.connect_async(self._host, self._port, keepalive=MQTT_KEEPALIVE_S)
        self._client.loop_start()
        super().start()
        return self

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.log(f"mqtt {self.target}: broker refused the connection ({reason})")
            return
        with self._cond:
            self.connected = True
            if self._ever_connected:
                self.reconnects += 1
            self._ever_connected = True
        # This runs on paho's network thread, so the acknowledgement cannot overtake the bookkeeping.
        info = client.publish(self.status_topic, "online", qos=1, retain=True)
        with self._cond:
            self._status_mids.add(info.mid)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._cond:
            if self.connected:
                self.retried += len(self._outstanding)  # paho sends them again after reconnecting
            self.connected = self._ready = False

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._cond:
            if mid in self._status_mids:
                self._status_mids.discard(mid)
                self._ready = self.connected
            elif mid in self._outstanding:
                self._outstanding.discard(mid)
                self.sent += 1
            else:
                self._acked_early.add(mid)
            self._cond.notify_all()

    def _next_ready(self) -> Optional[Dict[str, Any]]:
        """The oldest queued event once the broker can take it in order; None once closing and empty, or
        when the drain time ends first (the event stays queued and counts as not delivered).

        Ready means connected, paho's resend of the messages in flight at a disconnect already written
        (the ``online`` status goes out before that resend, so its acknowledgement comes after it), and
        the window open. Events wait in our bounded queue, never in paho's unbounded one: a publish during
        the reconnect would overtake the resent ones, and the line would see frame 49 before frame 5."""
        with self._cond:
            while True:
                over = self._deadline is not None and time.monotonic() >= self._deadline
                if over or (self._closing and not self._queue):
                    return None
                if self._queue and self._ready and len(self._outstanding) < MQTT_WINDOW:
                    return self._queue.popleft()
                self._cond.wait(None if self._deadline is None else self._deadline - time.monotonic())

    def _run(self) -> None:
        while True:
            event = self._next_ready()
            if event is None:
                return
            info = self._client.publish(self.topic, json.dumps(event, allow_nan=False), qos=1)
            with self._cond:
                if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
                    self.dropped += 1
                elif info.mid in self._acked_early:
                    self._acked_early.discard(info.mid)
                    self.sent += 1
                else:
                    self._outstanding.add(info.mid)

    def _unacknowledged(self) -> int:
        return len(self._outstanding)

    def _finish(self, seconds: float) -> None:
        """Wait for the last acknowledgements, say offline (retained: a clean exit sends no will), disconnect."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while self._outstanding and self.connected and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            connected = self.connected
        if connected:  # published outside the lock: paho holds its own while it calls on_publish
            info = self._client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, min(1.0, deadline - time.monotonic())))
            except (RuntimeError, ValueError):
                pass  # the connection went meanwhile: the broker then publishes the will, also offline
        self._client.disconnect()
        self._client.loop_stop()
        self.connected = False


class WebhookPublisher(Publisher):
    """``http(s)://HOST[:PORT]/PATH``: one POST of the event JSON per event, in order."""

    kind = "webhook"

    def __init__(self, url: str, log: Callable[[str], None], queue_size: int = QUEUE_SIZE) -> None:
        parsed = urllib.parse.urlsplit(url)
        example = "http://HOST[:PORT]/PATH, e.g. http://10.0.0.3:8000/verdicts"
        if parsed.scheme not in ("http", "https"):
            raise RuntimeInputError(f"bad --webhook {url}; write {example}")
        host, port = _host_port(parsed, url, "--webhook", 443 if parsed.scheme == "https" else 80, example)
        super().__init__(f"{host}:{port}{parsed.path or '/'}", log, queue_size)
        self.url = url
        self._in_flight = 0

    def _post(self, body: bytes) -> Optional[int]:
        """The HTTP status, or None when the endpoint could not be reached."""
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "destseg-runtime"})
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, ValueError):
            return None

    def _run(self) -> None:
        delay = WEBHOOK_RETRY_S[0]
        warned = False
        while True:
            event = self._next()
            if event is None:
                return
            body = json.dumps(event, allow_nan=False).encode()
            self._in_flight = 1
            while True:
                status = self._post(body)
                if status is not None and status < 500 and status not in (408, 429):
                    break
                self.connected = False
                self.retried += 1
                if not warned:
                    self.log(f"webhook {self.target}: {'HTTP ' + str(status) if status else 'unreachable'}; retrying, events queue")
                    warned = True
                if self._wait(delay):
                    return  # the drain time is over: the event counts as not delivered
                delay = min(delay * 2, WEBHOOK_RETRY_S[1])
            self._in_flight = 0
            if not self.connected and warned:
                self.reconnects += 1
                self.log(f"webhook {self.target}: reachable again")
            self.connected, warned, delay = True, False, WEBHOOK_RETRY_S[0]
            if 200 <= status < 300:
                self.sent += 1
            else:
                self.dropped += 1
                self.log(f"webhook {self.target}: HTTP {status} for frame {event.get('frame')}; dropped (not retried)")

    def _unacknowledged(self) -> int:
        return self._in_flight


def make_publishers(mqtt: List[str], webhooks: List[str], log: Callable[[str], None]) -> List[Publisher]:
    """One output per URL, checked (one-line errors before anything starts) but not started."""
    return [MqttPublisher(u, log) for u in mqtt] + [WebhookPublisher(u, log) for u in webhooks]
