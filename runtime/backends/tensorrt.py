"""TensorRT 10 with pycuda: the bundle's engine on the GPU, timed with CUDA events.

The engine comes from :func:`destseg.tensorrt.engine_for_bundle`: the one in the bundle when
it was built for this GPU and TensorRT, else one built at first start (the same builder as
``destseg-export --engine``) and cached under ``~/.cache/destseg/engines`` by device key, so
a Jetson pays the build once. Inputs and outputs live in page-locked host buffers allocated
once; every frame is one async host-to-device copy, ``execute_async_v3`` and async
device-to-host copies on one stream, with CUDA events between them for the profile's
h2d / infer / d2h.

Host buffers get their NumPy dtype from :data:`NUMPY_DTYPES`, our own table keyed by the
names of ``tensorrt.DataType``: TensorRT 8.5.1/8.5.2's ``trt.nptype`` (JetPack 5.1) builds
its table with ``np.bool``, which NumPy 1.24 removed, so it raises on every call there
(NVIDIA/TensorRT#2557; fixed in 8.5.3).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from destseg.inference import BundleModel, choose_variant
from destseg.runtime.backends import check_batch, check_model_input
from destseg.runtime.errors import BackendError

# tensorrt.DataType member name -> NumPy dtype, for every type an engine's I/O tensor can
# have (TensorRT 8.5: FLOAT HALF INT8 INT32 BOOL UINT8; 10.x adds BF16 INT64 FP8 INT4 FP4
# E8M0). The 8-bit and 4-bit float types and BF16 have no NumPy dtype.
NUMPY_DTYPES: Dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


def numpy_dtype(name: str, tensor: str = "tensor") -> np.dtype:
    """The NumPy dtype of the ``tensorrt.DataType`` member called ``name`` (``DataType.name``)."""
    if name not in NUMPY_DTYPES:
        raise BackendError(
            f"engine {tensor} is {name}, which has no NumPy type; the bundle's models take uint8 or float32 "
            f"and give float32: re-export the bundle (destseg-export) and delete the cached engine"
        )
    return np.dtype(NUMPY_DTYPES[name])


def _imports() -> Tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError("TensorRT is not installed (import tensorrt failed); it comes with JetPack, or use --backend onnxruntime") from exc
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendError("pycuda is not installed: pip install pycuda (JetPack: apt-get install python3-pycuda), or use --backend onnxruntime") from exc
    return trt, cuda


class TensorRTBackend(BundleModel):
    """One deserialised engine, one execution context, one CUDA stream, buffers allocated once."""

    name = "tensorrt"

    def __init__(self, bundle_path: str | os.PathLike, precision: str = "auto", batch_size: int = 1, device: int = 0) -> None:
        from destseg.tensorrt import device_info, engine_for_bundle

        trt, cuda = _imports()
        super().__init__(bundle_path, batch_size)
        self.variant, self.precision = choose_variant(precision, self.bundle.variants, "tensorrt")
        self.bundle.model_path(self.variant)  # a missing variant says how to export it, before any GPU work
        info = device_info(device)
        engine_file = engine_for_bundle(self.bundle, self.precision, batch_size=batch_size, device=info)

        cuda.init()
        self._cuda = cuda
        self._context_cuda = cuda.Device(device).make_context()
        try:
            self._setup(trt, engine_file)
        except Exception:
            self.close()
            raise
        self.detail = f"{self.variant} engine {engine_file.name} on {info.gpu_name} (TensorRT {info.tensorrt_version})"

    def _setup(self, trt: Any, engine_file: Path) -> None:
        cuda = self._cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)  # must outlive the engine
        self._engine = self._runtime.deserialize_cuda_engine(engine_file.read_bytes())
        if self._engine is None:
            raise BackendError(f"TensorRT cannot load {engine_file}; delete it to rebuild (it was built by another TensorRT or GPU)")
        self._context = self._engine.create_execution_context()
        self._stream = cuda.Stream()
        self._host: Dict[str, np.ndarray] = {}
        self._device: Dict[str, Any] = {}
        self._input = None
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._input = name
                shape = list(self._engine.get_tensor_shape(name))
                check_model_input(self, shape if shape[0] != -1 else ["batch", *shape[1:]], engine_file.name)
                if shape[0] == -1:
                    self._context.set_input_shape(name, (self.batch_size, *shape[1:]))
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(self._context.get_tensor_shape(name))
            host = cuda.pagelocked_empty(shape, numpy_dtype(self._engine.get_tensor_dtype(name).name, name))
            self._host[name] = host
            self._device[name] = cuda.mem_alloc(host.nbytes)
            self._context.set_tensor_address(name, int(self._device[name]))
        self._map, self._score = self.bundle.output_names
        self._events = [cuda.Event() for _ in range(4)]
        self._timings = {"h2d": 0.0, "infer": 0.0, "d2h": 0.0}

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        check_batch(batch, self.image_size, self.batch_size)
        cuda, stream, events = self._cuda, self._stream, self._events
        np.copyto(self._host[self._input], self.to_input(batch))
        events[0].record(stream)
        cuda.memcpy_htod_async(self._device[self._input], self._host[self._input], stream)
        events[1].record(stream)
        if not self._context.execute_async_v3(stream.handle):
            raise BackendError("TensorRT failed to enqueue the engine; see the TensorRT log above")
        events[2].record(stream)
        for name in (self._map, self._score):
            cuda.memcpy_dtoh_async(self._host[name], self._device[name], stream)
        events[3].record(stream)
        stream.synchronize()
        self._timings = {"h2d": events[1].time_since(events[0]), "infer": events[2].time_since(events[1]),
                         "d2h": events[3].time_since(events[2])}
        n = self.batch_size
        return (self._host[self._map].reshape(n, self.image_size, self.image_size).astype(np.float32, copy=True),
                self._host[self._score].reshape(n).astype(np.float32, copy=True))

    def last_timings(self) -> Dict[str, float]:
        return dict(self._timings)

    def close(self) -> None:
        """Free the buffers and the CUDA context (the engine must go before its context)."""
        if getattr(self, "_context_cuda", None) is None:
            return
        for attr in ("_context", "_engine", "_runtime", "_device", "_host", "_events", "_stream"):
            if hasattr(self, attr):
                delattr(self, attr)
        self._context_cuda.pop()
        self._context_cuda.detach()
        self._context_cuda = None
