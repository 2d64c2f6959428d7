"""What every destseg-edge stage shares: image I/O, dataset layout, preprocessing, metrics,
thresholds and the verdict rule, the overlay, the bundle format, atomic writes, and opening a
bundle's models (variants, ONNX Runtime sessions, the TensorRT builder), with the CPU facts and
latency statistics they need. Nothing here imports torch."""

__version__ = "0.1.0"
