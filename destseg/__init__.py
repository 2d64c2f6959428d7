"""What every destseg-edge stage shares: image I/O, dataset layout, preprocessing,
metrics, the overlay, the bundle format and atomic writes. Nothing here imports torch."""

__version__ = "0.1.0"
