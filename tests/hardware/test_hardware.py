import importlib.util

import pytest
import torch

from g2g.build.random_streams import rng_state, seed_everything, set_rng_state
from g2g.hardware.device import DeviceUnavailableError, select_device


def test_auto_and_cpu_resolve_to_a_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cpu", "cuda", "privateuseone")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(DeviceUnavailableError, match="hardware=cuda was requested.*hardware=cpu"):
        select_device("cuda")


@pytest.mark.skipif(importlib.util.find_spec("torch_directml") is not None,
                    reason="torch-directml is installed here")
def test_missing_directml_is_a_clear_error():
    with pytest.raises(DeviceUnavailableError, match="torch-directml is not installed"):
        select_device("directml")


def test_unknown_device_name_is_refused():
    with pytest.raises(ValueError, match="hardware.device='tpu'"):
        select_device("tpu")


def test_rng_state_round_trip_restores_the_same_draws():
    seed_everything(5)
    state = rng_state()
    first = torch.rand(4)
    set_rng_state(state)
    assert torch.equal(torch.rand(4), first)
