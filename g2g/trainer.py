"""The SNN training loop: epochs of mini-batch steps over in-memory tensors, and
evaluation. Loss: cross-entropy on output spike counts (summed over time)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from g2g.model import NetworkOutput, SpikingNetwork

#: called after every ``optimizer.step()`` with (global_step, network output, encoded input)
StepCallback = Callable[[int, NetworkOutput, torch.Tensor], None]


def _firing_rate_names(num_layers: int) -> list[str]:
    return [f"firing_rate_lif{layer + 1}" for layer in range(num_layers)]


class Trainer:
    """Runs training epochs and evaluations of a :class:`SpikingNetwork`.

    Args:
        model: the network.
        optimizer: built from ``train.optimizer`` over ``model.parameters()``.
        encoder: maps ``[B, D]`` to the input sequence ``[T, B, D]``.
        batch_size: training batch size B.
        eval_batch_size: batch size for evaluation (no gradients kept).
        shuffle_generator: CPU generator of the per-epoch shuffles (its state is
            checkpointed, so a resumed run sees the same batches).
        progress: show a tqdm bar (loss, accuracy, time left).
        step_callbacks: run after every optimizer step (e.g. DST).
    """

    def __init__(
        self,
        model: SpikingNetwork,
        optimizer: torch.optim.Optimizer,
        encoder: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int,
        eval_batch_size: int = 1000,
        shuffle_generator: torch.Generator | None = None,
        progress: bool = True,
        step_callbacks: list[StepCallback] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.encoder = encoder
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle_generator = shuffle_generator or torch.Generator()
        self.progress = progress
        self.step_callbacks = list(step_callbacks or [])
        self.global_step = 0

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, description: str = "train") -> dict:
        """One pass over ``x`` ``[N, D]``, ``y`` ``[N]`` in shuffled mini-batches.

        Returns:
            ``train_loss`` (mean per example), ``train_accuracy`` (fraction),
            ``train_firing_rate_lif{l}`` (mean spikes per neuron and step) and
            ``epoch_time_s`` (seconds).
        """
        self.model.train()
        started = time.perf_counter()
        order = torch.randperm(len(y), generator=self.shuffle_generator).to(x.device)
        num_batches = (len(y) + self.batch_size - 1) // self.batch_size
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), device=x.device)
        rate_sums = None
        bar = tqdm(total=len(y), desc=description, unit="img", disable=not self.progress, leave=False)
        for batch in range(num_batches):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            inputs = self.encoder(x[index])
            output = self.model(inputs)
            loss = F.cross_entropy(output.counts, y[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.global_step += 1
            for callback in self.step_callbacks:
                callback(self.global_step, output, inputs)
            with torch.no_grad():
                loss_sum += loss.detach() * len(index)
                correct += (output.counts.argmax(1) == y[index]).sum()
                rates = torch.stack([spikes.mean() for spikes in output.spikes]) * len(index)
                rate_sums = rates if rate_sums is None else rate_sums + rates
            bar.update(len(index))
            if self.progress and (batch % 10 == 0 or batch == num_batches - 1):
                seen = min((batch + 1) * self.batch_size, len(y))
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
        bar.close()
        metrics = {
            "train_loss": loss_sum.item() / len(y),
            "train_accuracy": correct.item() / len(y),
            "epoch_time_s": time.perf_counter() - started,
        }
        for name, value in zip(_firing_rate_names(len(rate_sums)), (rate_sums / len(y)).tolist()):
            metrics[f"train_{name}"] = value
        return metrics

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, prefix: str = "test") -> dict:
        """Accuracy, loss and per-layer firing rates on ``x`` ``[N, D]``, ``y`` ``[N]``.

        Returns:
            ``{prefix}_loss``, ``{prefix}_accuracy`` and ``firing_rate_lif{l}`` (mean
            spikes per neuron and time step on this split).
        """
        self.model.eval()
        loss_sum, correct, rate_sums = 0.0, 0, None
        for start in range(0, len(y), self.eval_batch_size):
            inputs = self.encoder(x[start : start + self.eval_batch_size])
            target = y[start : start + self.eval_batch_size]
            output = self.model(inputs)
            loss_sum += F.cross_entropy(output.counts, target, reduction="sum").item()
            correct += int((output.counts.argmax(1) == target).sum())
            rates = torch.stack([spikes.mean() for spikes in output.spikes]) * len(target)
            rate_sums = rates if rate_sums is None else rate_sums + rates
        metrics = {f"{prefix}_loss": loss_sum / len(y), f"{prefix}_accuracy": correct / len(y)}
        metrics.update(zip(_firing_rate_names(len(rate_sums)), (rate_sums / len(y)).tolist()))
        return metrics
