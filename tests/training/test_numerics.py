"""Numerics of a training run: a NaN or infinite parameter, gradient, LIF membrane or
loss stops training before the optimizer uses it, and the run fails saying which;
progress on output that is not a terminal is a few plain log lines."""

import io
import logging
import math
import subprocess
import sys

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT
from g2g.models.network import SpikingNetwork
from g2g.snn.encoders import CurrentEncoder
from g2g.snn.neurons import LIF
from g2g.training.trainer import NonFiniteLossError, NonFiniteTrainingError, Trainer


def _trainer(step_callbacks=(), encoder=None, **kwargs) -> Trainer:
    torch.manual_seed(0)
    model = SpikingNetwork(12, 16, 3, connectivity="index", num_groups=2, p_inter=0.5)
    return Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), encoder or CurrentEncoder(4),
                   batch_size=8, step_callbacks=list(step_callbacks), **{"progress": False, **kwargs})


def _data(count=32):
    generator = torch.Generator().manual_seed(1)
    return torch.rand(count, 12, generator=generator), torch.randint(0, 3, (count,), generator=generator)


def _weights(trainer):
    return {name: value.clone() for name, value in trainer.model.state_dict().items()}


def _assert_unchanged(before, trainer):
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(before[name], value), name


def test_nan_gradient_stops_the_step_naming_the_tensor_before_the_weights_change():
    trainer = _trainer()
    x, y = _data()
    trainer.train_epoch(x, y)  # 4 good steps
    before = _weights(trainer)
    trainer.model.fc2.weight.register_hook(lambda grad: grad * math.nan)
    with pytest.raises(NonFiniteTrainingError, match=r"the fc2\.weight gradient became NaN \(256 of 256 entries\) "
                                                     r"at global step 5 \(batch 1 of 4\); the weights were not "
                                                     r"updated with it\. Try a smaller train\.lr") as error:
        trainer.train_epoch(x, y)
    assert (error.value.tensor, error.value.global_step) == ("fc2.weight gradient", 5)
    assert not isinstance(error.value, NonFiniteLossError)
    _assert_unchanged(before, trainer)
    assert trainer.global_step == 4


def test_infinite_parameter_made_by_the_last_step_of_an_epoch_stops_it_before_it_returns():
    def break_fc3_bias(step, output, inputs):
        if step == 4:  # the epoch's last step: no later step would see it
            trainer.model.fc3.bias.data[1] = math.inf

    trainer = _trainer([break_fc3_bias])
    with pytest.raises(NonFiniteTrainingError, match=r"the parameter fc3\.bias became infinite \(1 of 3 entries\) "
                                                     r"in global step 4") as error:
        trainer.train_epoch(*_data())
    assert (error.value.tensor, error.value.global_step) == ("fc3.bias", 4)


def test_nan_parameter_is_reported_as_the_cause_before_the_membrane_and_loss_it_spoils():
    def break_fc1_weight(step, output, inputs):
        if step == 2:
            trainer.model.fc1.weight.data[0, 0] = math.nan

    trainer = _trainer([break_fc1_weight])
    with pytest.raises(NonFiniteTrainingError, match=r"the parameter fc1\.weight became NaN \(1 of 192 entries\) "
                                                     r"in global step 2 .* before the next optimizer step"):
        trainer.train_epoch(*_data())
    assert trainer.global_step == 2


def test_infinite_membrane_stops_the_step_naming_the_lif_layer():
    class InfiniteFirstExample(CurrentEncoder):
        def __call__(self, x):
            x = x.clone()
            x[0] = math.inf
            return super().__call__(x)

    trainer = _trainer(encoder=InfiniteFirstExample(4))
    before = _weights(trainer)
    with pytest.raises(NonFiniteTrainingError, match=r"the lif1 membrane became (NaN|infinite) at global step 1 "
                                                     r"\(batch 1 of 4\)") as error:
        trainer.train_epoch(*_data())
    assert error.value.tensor == "lif1 membrane"
    _assert_unchanged(before, trainer)


@pytest.mark.parametrize("current", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_lif_last_membrane_peak_is_not_finite_when_any_step_was(current, beta):
    # non-finite values persist through the recursion, so the last step tells
    inputs = torch.full((6, 2, 3), 0.3)
    inputs[1, 0, 2] = current
    lif = LIF(beta=beta, threshold=1.0)
    lif(inputs)
    assert not torch.isfinite(lif.last_membrane_peak)
    lif(torch.full((6, 2, 3), 0.3))
    assert torch.isfinite(lif.last_membrane_peak)


def _quick_command(tmp_path, data_root, *overrides):
    return [sys.executable, str(REPO_ROOT / "run.py"), "model=index", "model.hidden_dim=16", "encoder.num_steps=4",
            "train.batch_size=16", "train.eval_batch_size=32", "hardware=cpu", "dataset.download=false",
            f"dataset.root={data_root}", f"hydra.run.dir={tmp_path / 'outputs'}", *overrides]


@pytest.mark.integration
def test_huge_learning_rate_fails_the_run_naming_the_tensor_without_done_marker(tmp_path, tiny_data_root):
    result = subprocess.run(_quick_command(tmp_path, tiny_data_root, "train.lr=1e37", "train.epochs=2",
                                           "train.progress=false"),
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "became" in result.stderr and "Try a smaller train.lr" in result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
    assert run.info.status == "FAILED"
    assert not list((tmp_path / "checkpoints").glob("*.DONE"))
    for checkpoint in (tmp_path / "checkpoints").glob("*/checkpoint.pth"):
        state = torch.load(checkpoint, weights_only=True)
        assert all(torch.isfinite(value).all() for value in state["model"].values() if value.is_floating_point())


def _progress_lines(caplog, interval_s, stream, epochs=2):
    trainer = _trainer(progress=True, progress_stream=stream, progress_interval_s=interval_s)
    with caplog.at_level(logging.INFO, logger="g2g.training.trainer"):
        for epoch in range(1, epochs + 1):
            trainer.train_epoch(*_data(), description=f"epoch {epoch}/{epochs}")
    return [record.getMessage() for record in caplog.records if record.name == "g2g.training.trainer"]


def test_progress_on_a_non_terminal_is_one_log_line_per_epoch_within_the_interval(caplog):
    lines = _progress_lines(caplog, interval_s=30.0, stream=io.StringIO())
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2: 100% 32/32 img [") and "loss=" in lines[0] and "acc=" in lines[0]
    assert lines[1].startswith("epoch 2/2: 100% 32/32 img [")


def test_progress_on_a_non_terminal_logs_at_most_one_line_per_interval(caplog, monkeypatch):
    clock = iter(range(0, 10_000, 10))  # every reading 10 s later: a line every 3 batches at 30 s
    monkeypatch.setattr("g2g.training.trainer.time.monotonic", lambda: next(clock))
    lines = _progress_lines(caplog, interval_s=30.0, stream=io.StringIO(), epochs=1)
    assert [line.split(" img")[0] for line in lines] == ["epoch 1/1:  75% 24/32", "epoch 1/1: 100% 32/32"]


def test_progress_on_a_terminal_is_the_tqdm_bar_and_no_log_lines(caplog):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    assert _progress_lines(caplog, interval_s=0.0, stream=terminal) == []
    assert "\r" in terminal.getvalue() and "img/s" in terminal.getvalue()


@pytest.mark.integration
def test_run_with_output_to_a_file_writes_readable_progress_lines(tmp_path, tiny_data_root):
    result = subprocess.run(_quick_command(tmp_path, tiny_data_root, "train.epochs=2"),
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "\r" not in output
    progress = [line for line in output.splitlines() if "% " in line and " img [" in line]
    assert [line.split("] - ")[-1].split(" img")[0] for line in progress] == ["epoch 1/2: 100% 64/64",
                                                                             "epoch 2/2: 100% 64/64"]
    assert sum("epoch 1/2: train_loss" in line for line in output.splitlines()) == 1


@pytest.mark.integration
def test_finite_check_benchmark_runs_and_prints_a_row_per_model():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "finite_check.py"), "--threads", "1",
                             "--hidden", "32", "--num-steps", "4", "--batch", "8", "--repeats", "1",
                             "--check-repeats", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows == ["model", "dense", "mixer"]
