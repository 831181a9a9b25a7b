"""Device selection, CPU threads and deterministic settings."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

DEVICES = ("auto", "cpu", "cuda", "directml")


class DeviceUnavailableError(RuntimeError):
    """An explicitly requested device is not present on this machine."""


def _directml_device() -> torch.device | None:
    """The DirectML device when torch-directml is installed and works, else None.
    torch-directml exists only for Windows/WSL; it is imported only here."""
    try:
        import torch_directml  # optional, platform-specific
    except (ImportError, OSError):
        return None
    try:
        return torch_directml.device()
    except Exception:  # noqa: BLE001 (a broken DirectML install behaves like a missing one)
        return None


def select_device(name: str) -> torch.device:
    """Resolve ``hardware.device`` to a torch device.

    ``auto`` picks DirectML, then CUDA, then CPU (the original scripts' order).

    Raises:
        ValueError: a name not in ``DEVICES``.
        DeviceUnavailableError: ``cuda`` or ``directml`` requested but missing.
    """
    if name not in DEVICES:
        raise ValueError(f"hardware.device={name!r} is unknown; allowed: {', '.join(DEVICES)}")
    if name == "cpu":
        return torch.device("cpu")
    if name in ("auto", "directml"):
        device = _directml_device()
        if device is not None:
            return device
        if name == "directml":
            raise DeviceUnavailableError(
                "hardware=directml was requested but torch-directml is not installed or has "
                "no device (it exists for Windows/WSL: pip install 'g2g[directml]'); "
                "use hardware=auto or hardware=cpu"
            )
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        raise DeviceUnavailableError(
            "hardware=cuda was requested but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "use hardware=auto or hardware=cpu"
        )
    return torch.device("cpu")


def configure(num_threads: int | None, deterministic: bool) -> None:
    """Set torch's intra-op thread count (``None`` keeps torch's default, all
    cores) and, when ``deterministic``, deterministic algorithms and cuDNN.

    Deterministic mode is strict: an operation that has no deterministic implementation
    on the device raises (``warn_only=False``) instead of warning once in a log nobody
    reads and making the run irreproducible. torch's filling of every uninitialised
    tensor (``torch.empty``) with NaN in deterministic mode is turned off
    (:data:`torch.utils.deterministic.fill_uninitialized_memory`): g2g writes every
    element of what it allocates (the LIF scan's membrane and resets), and the fill is a
    pass over memory per allocation, on the CPU too. cuBLAS gets the workspace setting
    its deterministic mode needs (``CUBLAS_WORKSPACE_CONFIG``) before CUDA is initialised.
    """
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@dataclass
class Hardware:
    """The ``hardware`` config group: the device a run computes on and how.

    Args:
        device: ``auto`` (DirectML, then CUDA, then CPU), ``cpu``, ``cuda`` or ``directml``.
        num_threads: torch CPU threads; None keeps torch's default (all cores).
        deterministic: deterministic algorithms and cuDNN (the original README's setting).
    """

    device: str = "auto"
    num_threads: int | None = None
    deterministic: bool = True

    def apply(self, num_threads: int | None = None) -> torch.device:
        """Select the device and set threads and determinism for this process.

        Args:
            num_threads: threads to use instead of :attr:`num_threads` (e.g. a sweep
                job's share of the cores); None keeps :attr:`num_threads`.
        Returns:
            The torch device.
        Raises:
            DeviceUnavailableError: ``cuda`` or ``directml`` requested but missing.
        """
        device = select_device(self.device)
        configure(num_threads if num_threads is not None else self.num_threads, self.deterministic)
        return device
