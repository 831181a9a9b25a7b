"""Numerical precision of a run: ``train.precision`` and ``train.tf32``.

The names are Lightning's:

- ``32``: everything in float32 (the default; the results of every earlier run).
- ``bf16-mixed``: the matrix products (fully connected layers, forward and backward) run
  in bfloat16 under :func:`torch.autocast`; on a CPU with native bfloat16 (AVX512-BF16 or
  AMX on x86, BF16 on Arm) or a CUDA GPU that has it (compute capability 8.0 on).
- ``16-mixed``: the same in float16, with a :class:`torch.amp.GradScaler` (float16's
  range is too small for small gradients); CUDA only.

What stays float32 in the mixed modes, and why (docs/precision.md):

- the weights, their gradients and the optimizer state (Adam's moments): autocast casts
  a float32 weight to bfloat16 for each product only, so updates of about ``lr`` are not
  lost to bfloat16's 8-bit mantissa;
- the LIF membrane recursion (:class:`g2g.snn.neurons.LIF` casts its input current to
  float32): near the threshold ``U_thr = 1`` bfloat16 resolves only 2^-7 = 0.008, so a
  membrane just under the threshold would round onto it and spikes would flip; every
  later step of the recursion adds its rounding to the next;
- spikes are exactly 0 or 1 in every precision (0 and 1 are exact in bfloat16 and
  float16), so the spike products are exact in their inputs;
- the loss, spike counts and firing-rate regulariser (from float32 spikes), the Hebbian
  traces of DST (accumulated from spikes outside autocast) and every evaluation metric.

TF32 (``train.tf32``, CUDA only) lets float32 matmuls and convolutions on Ampere and later
GPUs use 10-bit mantissas: faster, with results that differ from float32 in the fourth
digit. It is its own switch (not a ``precision``) as in PyTorch, and it is result
affecting, so it is a ``train`` key (part of the config hash), not a ``hardware`` key.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

#: the values of ``train.precision``
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
#: the autocast dtype of each mixed precision
AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class PrecisionUnavailableError(ValueError):
    """``train.precision`` or ``train.tf32`` asks for arithmetic that this run's device
    cannot do natively; the message names the key, the value and what is allowed."""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: AVX512-BF16 or AMX-BF16 (x86), or the
    Arm BF16 extension. torch's own check (``torch.cpu._is_avx512_bf16_supported``) when
    it exists, else the CPU flags of ``/proc/cpuinfo``."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if check is not None:
        try:
            if check():
                return True
        except RuntimeError:
            pass
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the CUDA GPU ``device`` computes bfloat16 natively (compute capability 8.0
    or later; torch would otherwise emulate it)."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def native_precisions(device: torch.device) -> tuple[str, ...]:
    """The values of ``train.precision`` that ``device`` runs natively."""
    if device.type == "cuda":
        return ("32", "bf16-mixed", "16-mixed") if cuda_has_native_bf16(device) else ("32", "16-mixed")
    if device.type == "cpu":
        return ("32", "bf16-mixed") if cpu_has_native_bf16() else ("32",)
    return ("32",)  # DirectML and others: float32 only


def check_precision(device: torch.device, precision: str, tf32: bool = False) -> None:
    """Refuse a precision or TF32 setting that ``device`` cannot run natively (before any
    expensive work).

    Raises:
        PrecisionUnavailableError: naming the key, the value, the device and what is
            allowed on it.
    """
    if precision not in PRECISIONS:
        raise PrecisionUnavailableError(f"train.precision={precision!r} is unknown; allowed: {', '.join(PRECISIONS)}")
    allowed = native_precisions(device)
    if precision not in allowed:
        why = {"16-mixed": "float16 autocast with gradient scaling is for CUDA GPUs",
               "bf16-mixed": ("this CPU has no native bfloat16 (AVX512-BF16, AMX or Arm BF16)" if device.type == "cpu"
                              else f"{device.type} has no native bfloat16 here")}[precision]
        raise PrecisionUnavailableError(
            f"train.precision={precision!r} cannot run natively on this run's device ({device}): {why}; "
            f"allowed here: {', '.join(allowed)}")
    if tf32 and device.type != "cuda":
        raise PrecisionUnavailableError(
            f"train.tf32=true: TF32 matmuls exist only on CUDA GPUs, and this run's device is {device}; "
            "allowed here: train.tf32=false")


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 in CUDA float32 matmuls and cuDNN convolutions for this
    process. torch allows it in convolutions by default; g2g forbids both unless
    ``train.tf32`` is on, so ``32`` means float32 everywhere."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def tf32_active(device: torch.device) -> bool:
    """Whether float32 matmuls or convolutions on ``device`` may use TF32 now."""
    return device.type == "cuda" and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def autocast(device: torch.device, precision: str):
    """The context in which a forward pass runs: :func:`torch.autocast` for a mixed
    precision, else nothing (``32`` runs exactly as without it)."""
    if precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def gradient_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A :class:`torch.amp.GradScaler` for ``16-mixed``, else None (bfloat16 has
    float32's range and needs none)."""
    return torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
