"""Verdicts to the line: a real Mosquitto broker and a local HTTP receiver get every event once, in order.

The runtime streams the brightness bundle of test_runtime_backends, so every frame's verdict is
known; the broker is Debian's mosquitto on a free loopback port, killed and restarted mid-run to
show that a dead broker costs no frame and that the runtime reconnects by itself.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from destseg.runtime.cli import main
from destseg.runtime.publishers import MqttPublisher, WebhookPublisher
from tests.line_helpers import Broker, Receiver, Runtime, Subscriber, validate_events
from tests.test_runtime_backends import write_brightness_bundle

SMALL = ["--width", "160", "--height", "120"]
TOPIC = "line1/verdicts"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_brightness_bundle(tmp_path_factory.mktemp("publishers") / "bundle")


def test_every_verdict_reaches_mqtt_and_the_webhook_once_in_order(bundle, tmp_path, capsys):
    frames = 40
    with Broker(tmp_path) as broker, Subscriber(broker.port, TOPIC) as subscriber, Receiver() as receiver:
        code = main(["--input", f"test://white?live=0&frames={frames}", *SMALL, "--bundle", str(bundle), "--headless",
                     "--mqtt", f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", "--webhook", receiver.url,
                     "--profile", str(tmp_path / "profile.json")])
        out, err = capsys.readouterr()
        assert code == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["frame"] for e in events] == list(range(frames))
        subscriber.messages.wait_for(lambda m: ("line1/verdicts/status", "offline", False) in m, what="the offline status")
        assert subscriber.frames() == list(range(frames))  # the runtime drained its queue before it said offline
        assert subscriber.statuses() == ["online", "offline"]
        bodies = receiver.bodies.snapshot()  # the webhook worker posted them all before the runtime exited
        assert bodies == events and {b["verdict"] for b in bodies} == {"NG"}
        validate_events(bodies)
        with Subscriber(broker.port, TOPIC) as late:  # a gateway that starts later learns the state from the retained status
            late.messages.wait_for(lambda m: m, what="the retained status")
            assert late.messages.snapshot() == [("line1/verdicts/status", "offline", True)]
    outputs = json.loads((tmp_path / "profile.json").read_text())["line_outputs"]
    assert [(o["kind"], o["sent"], o["dropped"], o["pending"]) for o in outputs] == [("mqtt", frames, 0, 0), ("webhook", frames, 0, 0)]


def test_a_killed_broker_loses_no_frame_and_the_runtime_reconnects(bundle, tmp_path):
    broker = Broker(tmp_path).start()
    subscriber = Subscriber(broker.port, TOPIC)
    profile = tmp_path / "profile.json"
    try:
        with Runtime(["--input", "test://ball", *SMALL, "--bundle", str(bundle), "--headless", "--profile", str(profile),
                      "--mqtt", f"mqtt://127.0.0.1:{broker.port}/{TOPIC}"], tmp_path) as runtime:
            subscriber.messages.wait_for(lambda m: len(subscriber.frames()) >= 5, what="the first verdicts over MQTT")
            broker.kill()
            dead_since = time.time()
            processed = len(runtime.out.snapshot())
            runtime.out.wait_for(lambda lines: len(lines) >= processed + 30, what="frames while the broker is dead")
            broker = Broker(tmp_path, broker.port).start()
            resumed = len(runtime.out.snapshot())
            subscriber.messages.wait_for(lambda m: any(f >= resumed for f in subscriber.frames()), what="verdicts after the restart")
            assert runtime.stop() == 0, runtime.log()
            events = runtime.frames()
    finally:
        subscriber.close()
        broker.kill()
    assert [e["frame"] for e in events] == list(range(len(events)))  # not one frame lost to the broker's death
    received = subscriber.frames()
    unique = list(dict.fromkeys(received))
    assert unique == sorted(unique)  # in order (QoS 1 may repeat one that was in flight)
    after_death = {e["frame"] for e in events if e["captured_at"] > dead_since}
    assert after_death <= set(received)  # queued while the broker was away, delivered after it came back
    assert subscriber.statuses().count("online") == 2
    (mqtt,) = json.loads(profile.read_text())["line_outputs"]
    assert mqtt["reconnects"] >= 1 and mqtt["dropped"] == 0 and mqtt["sent"] == len(events)


def test_a_runtime_that_dies_is_announced_offline_by_its_last_will(bundle, tmp_path):
    with Broker(tmp_path) as broker, Subscriber(broker.port, TOPIC) as subscriber:
        with Runtime(["--input", "test://ball", *SMALL, "--bundle", str(bundle), "--headless",
                      "--mqtt", f"mqtt://127.0.0.1:{broker.port}/{TOPIC}"], tmp_path) as runtime:
            subscriber.messages.wait_for(lambda m: subscriber.frames(), what="a verdict")
            runtime.proc.kill()  # no clean exit: only the broker can tell the line
            runtime.proc.wait(timeout=30)
        subscriber.messages.wait_for(lambda m: "offline" in subscriber.statuses(), what="the last will")
        assert subscriber.statuses() == ["online", "offline"]


def test_a_failing_webhook_is_retried_in_order_without_losing_events(bundle, tmp_path, capsys):
    with Receiver(answers=lambda n: 503 if n < 3 else 200) as receiver:
        code = main(["--input", "test://black?live=0&frames=10", *SMALL, "--bundle", str(bundle), "--headless",
                     "--webhook", receiver.url, "--profile", str(tmp_path / "profile.json")])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert [b["frame"] for b in receiver.bodies.snapshot()] == list(range(10))
    (hook,) = json.loads((tmp_path / "profile.json").read_text())["line_outputs"]
    assert (hook["sent"], hook["retried"], hook["dropped"], hook["reconnects"]) == (10, 3, 0, 1)
    assert "retrying, events queue" in err and "reachable again" in err


def test_a_full_queue_drops_the_oldest_and_counts_it(tmp_path):
    hold = threading.Event()
    with Receiver(hold=hold) as receiver:
        publisher = WebhookPublisher(receiver.url, log=lambda m: None, queue_size=3).start()
        publisher.put({"frame": 0})
        receiver.requests.wait_for(len, what="the first POST")  # the worker now waits on the endpoint
        for frame in range(1, 10):
            publisher.put({"frame": frame})  # returns at once although the endpoint does not answer
        assert publisher.dropped == 6 and publisher.pending() == 3
        hold.set()
        publisher.close()
        assert [b["frame"] for b in receiver.bodies.snapshot()] == [0, 7, 8, 9]
        assert (publisher.sent, publisher.dropped) == (4, 6)


@pytest.mark.parametrize("flag, url, message", [
    ("--mqtt", "mqtt://127.0.0.1:1883", "needs a topic without wildcards"),
    ("--mqtt", "mqtt://127.0.0.1:1883/line/#", "needs a topic without wildcards"),
    ("--mqtt", "tcp://127.0.0.1/line", "bad --mqtt"),
    ("--mqtt", "mqtt://user:secret@127.0.0.1/line", "credentials in the URL are not supported"),
    ("--webhook", "ftp://127.0.0.1/x", "bad --webhook"),
    ("--webhook", "http://:80/x", "bad --webhook"),
])
def test_bad_output_urls_are_one_line_errors_before_streaming(bundle, capsys, flag, url, message):
    code = main(["--input", "test://", "--bundle", str(bundle), "--headless", flag, url])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_publishers_check_their_urls_without_connecting():
    assert MqttPublisher("mqtt://10.0.0.2/line1/verdicts", log=print).target == "10.0.0.2:1883/line1/verdicts"
    assert WebhookPublisher("http://10.0.0.3:8000/v", log=print).target == "10.0.0.3:8000/v"


def test_the_line_outputs_and_the_dashboard_import_without_torch():
    code = ("import destseg.runtime.cli, destseg.runtime.dashboard, destseg.runtime.publishers, paho.mqtt.client, sys; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
