"""The SNN training loop: epochs of mini-batch steps over in-memory tensors, and
evaluation. Loss: cross-entropy on output spike counts (summed over time)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from g2g.models.network import NetworkOutput, SpikingNetwork
from g2g.training.synops import SynOpsCounter

#: called after every ``optimizer.step()`` with (global_step, network output, encoded input)
StepCallback = Callable[[int, NetworkOutput, torch.Tensor], None]


class EpochInterrupted(Exception):
    """Training stopped between two steps of an epoch on request.

    ``progress`` holds the epoch's batch order, the next batch and the running sums
    (CPU tensors and numbers, loadable with ``torch.load(weights_only=True)``); pass
    it back as ``Trainer.train_epoch(..., resume=progress)``.
    """

    def __init__(self, progress: dict) -> None:
        super().__init__(f"stopped before batch {progress['next_batch'] + 1}")
        self.progress = progress


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


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
        regularizer: maps the hidden layers' spikes to a loss term added to the
            cross-entropy (e.g. :class:`g2g.training.regularizer.FiringRateRegularizer`).
    """

    def __init__(
        self,
        model: SpikingNetwork,
        optimizer: torch.optim.Optimizer,
        encoder: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int,
        *,
        eval_batch_size: int = 1000,
        shuffle_generator: torch.Generator | None = None,
        progress: bool = True,
        step_callbacks: list[StepCallback] | None = None,
        regularizer: Callable[[tuple[torch.Tensor, ...]], torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.encoder = encoder
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle_generator = shuffle_generator or torch.Generator()
        self.progress = progress
        self.step_callbacks = list(step_callbacks or [])
        self.regularizer = regularizer
        self.global_step = 0
        #: set (e.g. by a signal handler) to stop after the current step
        self.stop_requested = False

    def _stateful_callbacks(self) -> list:
        return [callback for callback in self.step_callbacks if hasattr(callback, "state_dict")]

    def state_dict(self) -> dict:
        """Everything needed to continue training exactly where it stands.

        Returns:
            ``model`` and ``optimizer`` (their state dicts), ``step_callbacks`` (the
            state dict of every step callback that has one, e.g. the DST's traces and
            generator, in order), ``shuffle_rng`` (the shuffle generator's state, a
            uint8 tensor) and ``global_step`` (optimizer steps so far). The epoch's
            own position is not included: that is :class:`EpochInterrupted`'s
            ``progress``.
        """
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step_callbacks": [callback.state_dict() for callback in self._stateful_callbacks()],
            "shuffle_rng": self.shuffle_generator.get_state(),
            "global_step": self.global_step,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (into a trainer built from the same config).

        Raises:
            ValueError: ``state`` holds a different number of step-callback states
                than this trainer has step callbacks with state.
        """
        callbacks = self._stateful_callbacks()
        if len(state["step_callbacks"]) != len(callbacks):
            raise ValueError(f"the state has {len(state['step_callbacks'])} step-callback states, "
                             f"this trainer has {len(callbacks)} step callbacks with state")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for callback, callback_state in zip(callbacks, state["step_callbacks"]):
            callback.load_state_dict(callback_state)
        self.shuffle_generator.set_state(state["shuffle_rng"])
        self.global_step = state["global_step"]

    def train_epoch(
        self, x: torch.Tensor, y: torch.Tensor, description: str = "train", resume: dict | None = None
    ) -> dict:
        """One pass over ``x`` ``[N, D]``, ``y`` ``[N]`` in shuffled mini-batches.

        Between steps it checks :attr:`stop_requested` (set by a signal handler) and,
        when set, stops after the current step by raising :class:`EpochInterrupted`
        with everything needed to finish the epoch later exactly as if uninterrupted.

        Args:
            resume: the ``progress`` of an :class:`EpochInterrupted` to continue.
        Returns:
            ``train_loss`` (mean per example), ``train_accuracy`` (fraction),
            ``train_firing_rate_lif{l}`` (mean spikes per neuron and step),
            ``epoch_time_s`` (seconds) and, with a regulariser,
            ``train_regularizer_loss`` (mean of its loss term per example).
        Raises:
            EpochInterrupted: a stop was requested before the last batch.
            NonFiniteLossError: the loss became NaN or infinite (before the
                optimizer step, so the weights are still finite).
        """
        self.model.train()
        started = time.perf_counter()
        num_batches = (len(y) + self.batch_size - 1) // self.batch_size
        if resume is None:
            order = torch.randperm(len(y), generator=self.shuffle_generator).to(x.device)
            first_batch, elapsed = 0, 0.0
            loss_sum = torch.zeros((), device=x.device)
            correct = torch.zeros((), device=x.device)
            regularizer_sum = torch.zeros((), device=x.device)
            rate_sums = None
        else:
            order = resume["order"].to(x.device)
            first_batch, elapsed = resume["next_batch"], resume["elapsed_s"]
            loss_sum, correct = resume["loss_sum"].to(x.device), resume["correct"].to(x.device)
            rate_sums = resume["rate_sums"].to(x.device)
            regularizer_sum = resume["regularizer_sum"].to(x.device)
        bar = tqdm(total=len(y), desc=description, unit="img", disable=not self.progress, leave=False,
                   initial=min(first_batch * self.batch_size, len(y)))
        for batch in range(first_batch, num_batches):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            inputs = self.encoder(x[index])
            output = self.model(inputs)
            loss = F.cross_entropy(output.counts, y[index])
            if not torch.isfinite(loss):
                bar.close()
                raise NonFiniteLossError(
                    f"the training loss became {loss.item()} at global step {self.global_step + 1} "
                    f"(batch {batch + 1} of {num_batches}); the weights were not updated with it. "
                    "Try a smaller train.lr, or check the input scale (encoder.scale, encoder.bias)."
                )
            objective = loss
            if self.regularizer is not None:
                penalty = self.regularizer(output.spikes[:-1])
                objective = loss + penalty
                regularizer_sum += penalty.detach() * len(index)
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
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
            if self.stop_requested and batch < num_batches - 1:
                bar.close()
                raise EpochInterrupted({
                    "order": order.cpu(), "next_batch": batch + 1, "loss_sum": loss_sum.cpu(),
                    "correct": correct.cpu(), "rate_sums": rate_sums.cpu(),
                    "regularizer_sum": regularizer_sum.cpu(),
                    "elapsed_s": elapsed + time.perf_counter() - started,
                })
        bar.close()
        metrics = {
            "train_loss": loss_sum.item() / len(y),
            "train_accuracy": correct.item() / len(y),
            "epoch_time_s": elapsed + time.perf_counter() - started,
        }
        for name, value in zip(_firing_rate_names(len(rate_sums)), (rate_sums / len(y)).tolist()):
            metrics[f"train_{name}"] = value
        if self.regularizer is not None:
            metrics["train_regularizer_loss"] = regularizer_sum.item() / len(y)
        return metrics

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, prefix: str = "test") -> dict:
        """Accuracy, loss and per-layer firing rates on ``x`` ``[N, D]``, ``y`` ``[N]``.

        Returns:
            ``{prefix}_loss``, ``{prefix}_accuracy``, ``firing_rate_lif{l}`` (mean
            spikes per neuron and time step on this split) and the synaptic
            operations and energy per inference of :mod:`g2g.training.synops`.
        """
        self.model.eval()
        loss_sum, correct, rate_sums = 0.0, 0, None
        synops = SynOpsCounter(self.model.masked_layers(),
                               analog_input=not getattr(self.encoder, "produces_spikes", False))
        for start in range(0, len(y), self.eval_batch_size):
            inputs = self.encoder(x[start : start + self.eval_batch_size])
            target = y[start : start + self.eval_batch_size]
            output = self.model(inputs)
            synops.add((inputs,) + output.spikes[:-1])
            loss_sum += F.cross_entropy(output.counts, target, reduction="sum").item()
            correct += int((output.counts.argmax(1) == target).sum())
            rates = torch.stack([spikes.mean() for spikes in output.spikes]) * len(target)
            rate_sums = rates if rate_sums is None else rate_sums + rates
        metrics = {f"{prefix}_loss": loss_sum / len(y), f"{prefix}_accuracy": correct / len(y)}
        metrics.update(zip(_firing_rate_names(len(rate_sums)), (rate_sums / len(y)).tolist()))
        metrics.update(synops.metrics())
        return metrics
