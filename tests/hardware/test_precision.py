"""train.precision and train.tf32: 32 leaves every earlier run as it was, bf16-mixed trains
end to end on a CPU with native bfloat16 (spikes exactly 0/1, the membrane in float32),
resumes exactly, and a precision the device cannot run, or a checkpoint of another
precision or device, is refused with the key, the value and what is allowed."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import compose_config, metric_histories
from g2g.config.validation import ConfigError, validate
from g2g.hardware import precision as precision_module
from g2g.hardware.precision import PrecisionUnavailableError, check_precision, cpu_has_native_bf16
from g2g.lifecycle import checkpoint as ckpt
from g2g.lifecycle.signals import TrainingInterrupted
from g2g.models.network import SpikingNetwork
from g2g.run.job import run_job
from g2g.snn.neurons import LIF
from g2g.sparse.dst import DynamicSparsity

needs_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(),
                                reason="this CPU has no native bfloat16 (no avx512_bf16/amx_bf16 in /proc/cpuinfo)")
CPU = torch.device("cpu")
DST = ["model=mixer", "sparsity=dynamic", "sparsity.update_interval=3", "train.epochs=3"]


def test_precision_32_keeps_the_config_hash_every_earlier_run_has():
    # the hashes of these configs before train.precision and train.tf32 existed
    assert ckpt.config_hash(compose_config([])) == "36b05953"
    assert ckpt.config_hash(compose_config(["model=mixer", "sparsity=dynamic"])) == "2ea71ad7"
    assert "precision" not in ckpt.result_config(compose_config([]))["train"]


def test_precision_tf32_and_the_device_are_part_of_the_config_hash():
    base = ckpt.config_hash(compose_config([]))
    hashes = {base, ckpt.config_hash(compose_config(["train.precision=bf16-mixed"])),
              ckpt.config_hash(compose_config(["train.precision=16-mixed"])),
              ckpt.config_hash(compose_config(["train.tf32=true"])),
              ckpt.config_hash(compose_config([]), device="cuda")}
    assert len(hashes) == 5


def test_an_unknown_precision_is_refused_with_the_allowed_values():
    with pytest.raises(ConfigError, match=r"train.precision='64': must be one of: 32, bf16-mixed, 16-mixed"):
        validate(compose_config(["train.precision=64"]))


@pytest.mark.parametrize("overrides, message", [
    (["train.precision=16-mixed"], r"train.precision='16-mixed' cannot run natively on this run's device \(cpu\).*"
                                   r"allowed here: 32"),
    (["train.tf32=true"], r"train.tf32=true: TF32 matmuls exist only on CUDA GPUs.*allowed here: train.tf32=false"),
])
def test_a_precision_the_cpu_cannot_run_is_refused_before_any_work(tmp_path, overrides, message):
    with pytest.raises(PrecisionUnavailableError, match=message):
        run_job(compose_config(overrides, tmp_path))
    assert not (tmp_path / "checkpoints").exists()  # nothing started: no run folder, no data read
    assert not (tmp_path / "mlflow.db").exists()


def test_bf16_on_a_cpu_without_native_bfloat16_is_refused(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(PrecisionUnavailableError, match=r"train.precision='bf16-mixed'.*no native bfloat16.*allowed "
                                                        r"here: 32$"):
        check_precision(CPU, "bf16-mixed")


@needs_bf16
def test_bf16_mixed_keeps_spikes_exact_and_the_membrane_in_float32():
    torch.manual_seed(0)
    network = SpikingNetwork(20, 32, 10, connectivity="mixer", num_groups=4, p_inter=0.3)
    inputs = torch.rand(6, 8, 20).mul(20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = network(inputs)
        assert network.fc2(output.spikes[0], binary=True).dtype == torch.bfloat16  # the products run in bfloat16
    for spikes in output.spikes:
        assert spikes.dtype == torch.float32
        assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    assert output.spikes[0].sum() > 0
    assert network.lif1.last_membrane_peak.dtype == torch.float32
    torch.nn.functional.cross_entropy(output.counts, torch.arange(8) % 10).backward()
    assert all(p.grad.dtype == torch.float32 for p in network.parameters() if p.grad is not None)




@pytest.mark.integration
@needs_bf16
def test_bf16_mixed_trains_a_dst_network_end_to_end_and_resumes_exactly(tmp_path, tiny_data_root, monkeypatch):
    overrides = [*DST, "train.precision=bf16-mixed"]
    whole = run_job(compose_config(overrides, tmp_path / "whole", data_root=tiny_data_root))
    assert whole["epoch"] == 3
    assert all(torch.isfinite(torch.tensor(whole[key])) for key in ("train_loss", "test_loss"))
    client = MlflowClient(whole["tracking_uri"])
    params = client.get_run(whole["run_id"]).data.params
    assert params["train.precision"] == "bf16-mixed" and params["device"] == "cpu"

    real_call = DynamicSparsity.__call__

    def stop_after_step_7(self, global_step, output, inputs):
        changed = real_call(self, global_step, output, inputs)
        if global_step == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return changed

    monkeypatch.setattr(DynamicSparsity, "__call__", stop_after_step_7)
    with pytest.raises(TrainingInterrupted):
        run_job(compose_config(overrides, tmp_path / "resumed", data_root=tiny_data_root))
    monkeypatch.undo()
    resumed = run_job(compose_config(overrides, tmp_path / "resumed", data_root=tiny_data_root))
    assert resumed["epoch"] == 3
    resumed_histories = metric_histories(MlflowClient(resumed["tracking_uri"]), resumed["run_id"])
    assert resumed_histories == metric_histories(client, whole["run_id"])


def _bf16_checkpoint(tmp_path):
    cfg = compose_config(["train.precision=bf16-mixed"], tmp_path)
    path = tmp_path / "checkpoint.pth"
    writer = ckpt.CheckpointWriter(path, ckpt.config_hash(cfg), ckpt.result_config(cfg), "run", device="cpu",
                                   precision="bf16-mixed")
    writer.save({"model": {}, "optimizer": {}, "step_callbacks": [], "shuffle_rng": torch.get_rng_state(),
                 "global_step": 1}, {"torch": torch.get_rng_state()}, epoch=1, epoch_progress=None, history=[])
    return path, ckpt.config_hash(cfg)


def test_a_checkpoint_records_its_precision_and_device(tmp_path):
    path, config_hash = _bf16_checkpoint(tmp_path)
    state = ckpt.load_checkpoint(path, config_hash, precision="bf16-mixed")
    assert (state["precision"], state["device"]) == ("bf16-mixed", "cpu")


def test_resuming_with_another_precision_is_refused(tmp_path):
    path, config_hash = _bf16_checkpoint(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match=r"written by a run with precision 'bf16-mixed', this run has "
                                                   r"'32'.*set train.precision back"):
        ckpt.load_checkpoint(path, config_hash, precision="32")


def test_resuming_on_another_device_is_refused(tmp_path):
    path, config_hash = _bf16_checkpoint(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match=r"with device 'cpu', this run has 'meta'.*hardware.device"):
        ckpt.load_checkpoint(path, config_hash, device="meta", precision="bf16-mixed")


def test_a_low_precision_current_broadcast_over_time_is_cast_once_not_per_step(monkeypatch):
    from g2g.snn import neurons

    seen = []
    real_apply = neurons.LIFScan.apply
    monkeypatch.setattr(neurons.LIFScan, "apply", lambda current, *rest: seen.append(current) or real_apply(
        current, *rest))
    step = torch.rand(4, 6, dtype=torch.bfloat16).mul(2)
    spikes = LIF()(step.unsqueeze(0).expand(50, -1, -1))
    assert seen[0].dtype == torch.float32 and seen[0].stride(0) == 0  # still a broadcast: no [T, B, N] copy
    expected = LIF()(step.float().unsqueeze(0).expand(50, -1, -1))
    assert torch.equal(spikes, expected) and spikes.dtype == torch.float32


def _float16_trainer(init_scale: float):
    from g2g.snn.encoders import CurrentEncoder
    from g2g.training.trainer import Trainer

    torch.manual_seed(0)
    network = SpikingNetwork(12, 16, 4, connectivity="mixer", num_groups=2, p_inter=0.5)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    trainer = Trainer(network, optimizer, CurrentEncoder(4), 8, progress=False, autocast_dtype=torch.float16,
                      scaler=scaler)
    return trainer, torch.rand(16, 12).mul(3), torch.arange(16) % 4


def test_16_mixed_scales_the_loss_and_checkpoints_the_scaler():
    # 16-mixed runs on CUDA only; its trainer logic is the same with the CPU's float16 autocast
    trainer, x, y = _float16_trainer(init_scale=2.0**10)
    metrics = trainer.train_epoch(x, y)
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))
    assert trainer.state_dict()["scaler"]["scale"] == 2.0**10
    other, _, _ = _float16_trainer(init_scale=1.0)
    other.load_state_dict(trainer.state_dict())
    assert other.scaler.get_scale() == 2.0**10


def test_16_mixed_skips_a_step_whose_scaled_gradients_overflow_instead_of_stopping():
    trainer, x, y = _float16_trainer(init_scale=2.0**127)  # loss x scale overflows float32
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_epoch(x[:8], y[:8])  # one step: no NonFiniteTrainingError
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # the step was skipped
    assert trainer.scaler.get_scale() < 2.0**127 and trainer.global_step == 1
