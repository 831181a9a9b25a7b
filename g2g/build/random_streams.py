"""One independent random stream per consumer, all derived from the run's ``seed``.

Every part of a run that draws random numbers gets its own seed, derived from
``(seed, stream name)`` with NumPy's :class:`numpy.random.SeedSequence` (the
construction NumPy recommends for independent parallel streams: the name's CRC-32 is the
sequence's ``spawn_key``). So no two consumers read the same numbers: a connection
kept by the mask draw says nothing about its initial weight, and changing how many
numbers one consumer draws (another DST rule, another batch size) leaves every other
stream unchanged.

========================  ==============================================================
stream                    consumer
========================  ==============================================================
``masks``                 G2G group labels and connectivity masks (``model``)
``weight_init``           initial weights and biases (``model.weight_init``)
``shuffle``               order of the training examples in every epoch (trainer)
``folds``                 stratified cross-validation folds (``protocol=crossval``)
``validation_split``      which training examples are held out (``protocol.validation_fraction``)
``dst``                   random prune/grow choices and uniform regrowth (``sparsity=dynamic``)
``encoder``               torch's, NumPy's and Python's global generators: Bernoulli input
                          spikes of ``encoder=rate`` (snntorch draws from torch's global
                          generator, the only g2g consumer of it)
``data_subset``           ``dataset.train_subset`` / ``test_subset`` selections
========================  ==============================================================

A resumed run restores every stream's state from its checkpoint, so it continues
bit-exactly. :func:`seed_everything` seeds the global generators from the ``encoder``
stream; :func:`rng_state` and :func:`set_rng_state` save and restore them (checkpoints).
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch

#: stream names (see the module docstring for their consumers)
STREAMS = ("masks", "weight_init", "shuffle", "folds", "validation_split", "dst", "encoder", "data_subset")


def stream_seed(seed: int, stream: str) -> int:
    """The seed of ``stream`` for the run seed ``seed``: a 63-bit integer (fits
    ``torch.Generator.manual_seed`` and NumPy), a pure function of both arguments.

    Args:
        seed: the run's ``seed``, >= 0.
        stream: one of :data:`STREAMS`.
    Raises:
        ValueError: an unknown stream or a negative seed.
    """
    if stream not in STREAMS:
        raise ValueError(f"random stream {stream!r} is unknown; allowed: {', '.join(STREAMS)}")
    if int(seed) < 0:
        raise ValueError(f"seed={seed} must be >= 0")
    sequence = np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(stream.encode()),))
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global random generators from
    the run seed's ``encoder`` stream: in g2g only the rate encoder draws from them;
    masks, initial weights, shuffling, folds and DST have generators of their own."""
    global_seed = stream_seed(seed, "encoder")
    random.seed(global_seed)
    np.random.seed(global_seed % 2**32)
    torch.manual_seed(global_seed)


def rng_state(device: torch.device | None = None) -> dict:
    """Random generator states as plain tensors/tuples (loadable with
    ``torch.load(weights_only=True)``): Python's, torch's CPU generator and, for a run on a
    CUDA ``device``, that GPU's generator only (not every visible GPU's: a resume with
    fewer visible GPUs, or on another one, restores it all the same)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` returned (its tensors may be on any device: torch
    takes generator states only as CPU tensors, so they are copied there first); the CUDA
    generator state goes to the run's CUDA ``device``."""
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda_state = state.get("cuda")
    if cuda_state is not None and device is not None and device.type == "cuda":
        if isinstance(cuda_state, (list, tuple)):  # written by a version that saved every GPU's
            cuda_state = cuda_state[device.index or 0]
        torch.cuda.set_rng_state(cuda_state.cpu(), device)
