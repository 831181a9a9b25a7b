"""The hardware a run computes on: device selection, CPU threads, deterministic mode, and
the numerical precision the device can run."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "device": ["Hardware", "select_device", "DEVICES", "DeviceUnavailableError"],
    "precision": ["PRECISIONS", "check_precision", "PrecisionUnavailableError"],
})
