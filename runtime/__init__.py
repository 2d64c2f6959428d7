"""destseg-runtime: camera frames in, verdicts, heatmaps and latency figures out.

A frame's path, one file per step (read them in this order):

- ``sources.py``: a URI (``/dev/video0``, ``csi://0``, ``rtsp://``, a file, a folder,
  ``test://``) becomes a GStreamer pipeline that decodes, converts and scales to the
  model's S x S RGB, keeping the full-resolution frame only when an output needs it; ``cameras.py`` picks a
  camera's mode, ``frames.py`` pulls the paired frames out of the pipeline.
- ``backends/``: the model (TensorRT, OpenVINO, ONNX Runtime or PyTorch) turns the S x S frame
  into an anomaly map and a score, behind one ``Backend`` interface; a bundle's models
  are opened through ``destseg.inference`` and ``destseg.tensorrt``.
- ``events.py``: the score's OK/NG verdict (``destseg.verdict``) becomes a JSON line
  (``event.schema.json``); ``decision.py`` narrows it by ROI, minimum defect area and deadline.
- ``sinks.py``: the overlay goes to the display, a video file or RTP; NG frames to a folder;
  ``output_paths.py`` checks every path written, before the first frame.
- ``profiler.py``: every stage's milliseconds, summarised like trtexec.
- ``publishers.py``: every event to MQTT and webhooks, through bounded queues;
  ``dashboard.py`` (and ``dashboard.html``): the live web view and its JSON API;
  ``overrides.py``: live threshold changes, kept beside the bundle.
- ``stream.py``: the loop that ties them together (stop, reconnect, EOS on SIGINT);
  ``cli.py`` is ``destseg-runtime``.

``doctor.py`` is ``destseg-doctor``: it checks every one of those paths on the box it runs
on (``doctor_checks.py``) and runs test frames through each backend (``doctor_smoke.py``).

Nothing here imports torch (only the ``torch`` backend does, lazily) nor another stage's
code: the bundle on disk is all it reads. Benchmarking it is ``destseg.benchmarks``.
"""
