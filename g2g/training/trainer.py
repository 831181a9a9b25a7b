"""The SNN training loop: epochs of mini-batch steps over in-memory tensors, and
evaluation. Loss: cross-entropy on output spike counts (summed over time).

Every step checks, before its optimizer step, that the parameters, the LIF membranes,
the loss and the gradients are finite (:meth:`Trainer.check_finite`, raising
:class:`NonFiniteTrainingError`): one fused reduction per tensor and one host sync per
step; its cost is measured in benchmarks/README.md.

Progress: a tqdm bar when the progress stream is a terminal; otherwise (a log file, a
sweep job's or SLURM's output) a plain log line every :data:`PROGRESS_LOG_INTERVAL_S`
seconds and one at the end of each epoch.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from g2g.models.network import NetworkOutput, SpikingNetwork
from g2g.snn.neurons import LIF
from g2g.sparse.dst import DynamicSparsity
from g2g.training.synops import SynOpsCounter

log = logging.getLogger(__name__)

#: seconds between two progress log lines when the progress stream is not a terminal
PROGRESS_LOG_INTERVAL_S = 30.0
#: what to try when training stops on a NaN or infinite value
_NONFINITE_HINT = "Try a smaller train.lr, or check the input scale (encoder.scale, encoder.bias)."

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


class NonFiniteTrainingError(FloatingPointError):
    """A parameter, gradient, LIF membrane or the loss became NaN or infinite.

    Raised before the optimizer step that would use it (the weights are not updated
    with it), and before an epoch or an interrupted epoch returns (the checkpoint
    written after it keeps the last finite weights).

    Attributes:
        tensor: what became non-finite, e.g. ``fc1.weight gradient``, ``lif2 membrane``,
            ``fc3.bias`` (a parameter) or ``training loss``.
        global_step: the optimizer step it was found in (or, for a parameter, after).
    """

    def __init__(self, message: str, tensor: str, global_step: int) -> None:
        super().__init__(message)
        self.tensor = tensor
        self.global_step = global_step


class NonFiniteLossError(NonFiniteTrainingError):
    """The training loss (or the regulariser's term) became NaN or infinite."""


def _describe_nonfinite(value: torch.Tensor) -> str:
    """``NaN`` or ``infinite``, with how many entries when ``value`` has several."""
    kind = "NaN" if bool(torch.isnan(value).any()) else "infinite"
    if value.numel() == 1:
        return kind
    return f"{kind} ({int((~torch.isfinite(value)).sum())} of {value.numel()} entries)"


def _firing_rate_names(num_layers: int) -> list[str]:
    return [f"firing_rate_lif{layer + 1}" for layer in range(num_layers)]


def _is_interactive(stream: TextIO) -> bool:
    """A terminal, or a Jupyter kernel (where ``tqdm.auto`` draws a widget)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel.zmqshell" in sys.modules


#: the running loss and accuracy of an epoch, formatted for a progress display
RunningStats = Callable[[], dict[str, str]]


class _BarProgress:
    """A tqdm bar (images, loss and accuracy so far, time left); nothing when disabled."""

    def __init__(self, description: str, total: int, initial: int, stream: TextIO, enabled: bool) -> None:
        self.bar = tqdm(total=total, desc=description, unit="img", disable=not enabled, leave=False,
                        initial=initial, file=stream)

    def advance(self, count: int, stats: RunningStats, batch: int, last: bool) -> None:
        self.bar.update(count)
        if not self.bar.disable and (batch % 10 == 0 or last):  # stats() waits for the device
            self.bar.set_postfix(stats())

    def close(self, finished: bool) -> None:
        self.bar.close()


class _LogProgress:
    """Progress as plain log lines, for output that is not a terminal: tqdm's meter
    without the bar, at most one line every ``interval_s`` seconds and one when the
    epoch is finished (``epoch 1/4:  60% 1200/2000 img [00:12<00:09, 81.30img/s,
    loss=0.5000, acc=0.8000]``)."""

    FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} img [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

    def __init__(self, description: str, total: int, initial: int, interval_s: float) -> None:
        self.description, self.total, self.initial, self.done = description, total, initial, initial
        self.interval_s = interval_s
        self.started = self.last_line = time.monotonic()
        self.stats: RunningStats = dict

    def advance(self, count: int, stats: RunningStats, batch: int, last: bool) -> None:
        self.done += count
        self.stats = stats
        if time.monotonic() - self.last_line >= self.interval_s and not last:
            self._line()

    def close(self, finished: bool) -> None:
        if finished:
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        postfix = ", ".join(f"{key}={value}" for key, value in self.stats().items())
        log.info("%s", tqdm.format_meter(self.done, self.total, self.last_line - self.started,
                                         prefix=self.description, unit="img", postfix=postfix,
                                         bar_format=self.FORMAT, initial=self.initial))


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
        progress: show the training progress (loss, accuracy, time left): a tqdm bar
            when ``progress_stream`` is a terminal, else log lines (module docstring).
        sparsity: dynamic sparse training (``sparsity=dynamic``), or None: after every
            optimizer step it accumulates the Hebbian activity and, on update steps,
            prunes and grows connections; the optimizer state of the entries it changed
            restarts, and the optimizer steps through its ``adam_restart`` (see
            :meth:`train_epoch`).
        step_callbacks: run after every optimizer step (and after the DST).
        regularizer: maps the hidden layers' spikes to a loss term added to the
            cross-entropy (e.g. :class:`g2g.training.regularizer.FiringRateRegularizer`).
        progress_stream: where the tqdm bar goes; ``None``: ``sys.stderr`` at the
            start of each epoch.
        progress_interval_s: seconds between two progress log lines when
            ``progress_stream`` is not a terminal.
        autocast_dtype: ``torch.bfloat16`` or ``torch.float16``: the forward passes
            (training and evaluation) run under :func:`torch.autocast` with it
            (``train.precision``, :mod:`g2g.hardware.precision`); None: float32 only.
        scaler: a :class:`torch.amp.GradScaler` (``16-mixed``): the loss is scaled before
            the backward, the gradients unscaled before the finiteness check, and a step
            whose gradients overflowed is skipped (the scale shrinks) instead of raising.
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
        sparsity: DynamicSparsity | None = None,
        step_callbacks: list[StepCallback] | None = None,
        regularizer: Callable[[tuple[torch.Tensor, ...]], torch.Tensor] | None = None,
        progress_stream: TextIO | None = None,
        progress_interval_s: float = PROGRESS_LOG_INTERVAL_S,
        autocast_dtype: torch.dtype | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.scaler = scaler
        self.optimizer = optimizer
        self.encoder = encoder
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle_generator = shuffle_generator or torch.Generator()
        self.progress = progress
        self.sparsity = sparsity
        self.step_callbacks = list(step_callbacks or [])
        self.regularizer = regularizer
        self.progress_stream = progress_stream
        self.progress_interval_s = progress_interval_s
        self.global_step = 0
        #: set (e.g. by a signal handler) to stop after the current step
        self.stop_requested = False

    def _stateful_callbacks(self) -> list:
        """The DST (first, when there is one) and every step callback with a state dict."""
        stateful = [] if self.sparsity is None else [self.sparsity]
        return stateful + [callback for callback in self.step_callbacks if hasattr(callback, "state_dict")]

    def state_dict(self) -> dict:
        """Everything needed to continue training exactly where it stands.

        Returns:
            ``model`` and ``optimizer`` (their state dicts), ``step_callbacks`` (the
            DST's state dict first, when there is one: its traces, generator, records
            and restart steps; then that of every step callback that has one, in
            order), ``shuffle_rng`` (the shuffle generator's state, a uint8 tensor) and
            ``global_step`` (optimizer steps so far), and with a gradient scaler
            ``scaler`` (its state dict). The epoch's own position is not included: that
            is :class:`EpochInterrupted`'s ``progress``.
        """
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step_callbacks": [callback.state_dict() for callback in self._stateful_callbacks()],
            "shuffle_rng": self.shuffle_generator.get_state(),
            "global_step": self.global_step,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (into a trainer built from the same config).

        Raises:
            ValueError: ``state`` holds a different number of step-callback states
                than this trainer has a DST and step callbacks with state.
        """
        callbacks = self._stateful_callbacks()
        if len(state["step_callbacks"]) != len(callbacks):
            raise ValueError(f"the state has {len(state['step_callbacks'])} step-callback states, "
                             f"this trainer has {len(callbacks)} step callbacks with state (the DST counts as one)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for callback, callback_state in zip(callbacks, state["step_callbacks"]):
            callback.load_state_dict(callback_state)
        self.shuffle_generator.set_state(state["shuffle_rng"])
        self.global_step = state["global_step"]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def _autocast(self, x: torch.Tensor):
        """The context of a forward pass: autocast with :attr:`autocast_dtype`, or none."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=self.autocast_dtype)

    def train_epoch(
        self, x: torch.Tensor, y: torch.Tensor, description: str = "train", resume: dict | None = None
    ) -> dict:
        """One pass over ``x`` ``[N, D]``, ``y`` ``[N]`` in shuffled mini-batches.

        A step: encode, forward, loss (plus the regulariser's term), backward, the
        finiteness check, the optimizer step, then the DST: its Hebbian activity and, on
        update steps, pruning and growth, after which the changed entries' Adam state
        restarts (moments 0, their own step count; the optimizer steps through
        :meth:`AdamRestart.step <g2g.sparse.dst.adam_restart.AdamRestart.step>` so that
        they take a fresh parameter's steps), then the step callbacks.

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
            NonFiniteTrainingError: a parameter, gradient, LIF membrane or loss term
                became NaN or infinite (:meth:`check_finite`), found before the
                optimizer step and before returning, so the weights are still finite
                (:class:`NonFiniteLossError` for a loss term).
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
        progress = self._progress(description, len(y), min(first_batch * self.batch_size, len(y)))
        try:
            for batch in range(first_batch, num_batches):
                index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
                inputs = self.encoder(x[index])
                with self._autocast(x):  # mixed precision: the products; spikes, membranes, loss stay float32
                    output = self.model(inputs)
                loss = F.cross_entropy(output.counts, y[index])
                losses = {"training loss": loss}
                objective = loss
                if self.regularizer is not None:
                    penalty = self.regularizer(output.spikes[:-1])
                    losses["regulariser loss"] = penalty
                    objective = loss + penalty
                    regularizer_sum += penalty.detach() * len(index)
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is None:
                    objective.backward()
                    self.check_finite(losses, f"batch {batch + 1} of {num_batches}")
                    self._optimizer_step()
                else:  # 16-mixed: a step whose scaled gradients overflowed is skipped, the scale shrinks
                    self.scaler.scale(objective).backward()
                    self.scaler.unscale_(self.optimizer)
                    self.check_finite(losses, f"batch {batch + 1} of {num_batches}", gradients=False)
                    gradients = [p.grad for p in self.model.parameters() if p.grad is not None]
                    if bool(torch.isfinite(torch.nn.utils.get_total_norm(gradients))):
                        self._optimizer_step()
                    self.scaler.update()
                self.global_step += 1
                if self.sparsity is not None:
                    changed = self.sparsity(self.global_step, output, inputs)  # prunes and grows on update steps
                    self.sparsity.adam_restart.restart(changed)  # their Adam moments 0, their step count from here
                for callback in self.step_callbacks:
                    callback(self.global_step, output, inputs)
                with torch.no_grad():
                    loss_sum += loss.detach() * len(index)
                    correct += (output.counts.argmax(1) == y[index]).sum()
                    rates = torch.stack([spikes.mean() for spikes in output.spikes]) * len(index)
                    rate_sums = rates if rate_sums is None else rate_sums + rates
                seen = min((batch + 1) * self.batch_size, len(y))
                progress.advance(len(index), lambda seen=seen, loss_sum=loss_sum, correct=correct: {
                                     "loss": f"{loss_sum.item() / seen:.4f}", "acc": f"{correct.item() / seen:.4f}"},
                                 batch, last=batch == num_batches - 1)
                if self.stop_requested and batch < num_batches - 1:
                    self.check_finite()
                    raise EpochInterrupted({
                        "order": order.cpu(), "next_batch": batch + 1, "loss_sum": loss_sum.cpu(),
                        "correct": correct.cpu(), "rate_sums": rate_sums.cpu(),
                        "regularizer_sum": regularizer_sum.cpu(),
                        "elapsed_s": elapsed + time.perf_counter() - started,
                    })
            self.check_finite()
        except BaseException:
            progress.close(finished=False)
            raise
        progress.close(finished=True)
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

    def _optimizer_step(self) -> None:
        if self.sparsity is None:
            self.optimizer.step()
        else:  # Adam's step, where each entry DST changed takes a fresh parameter's (its own step count)
            self.sparsity.adam_restart.step()

    def _progress(self, description: str, total: int, initial: int) -> _BarProgress | _LogProgress:
        stream = self.progress_stream or sys.stderr
        if self.progress and not _is_interactive(stream):
            return _LogProgress(description, total, initial, self.progress_interval_s)
        return _BarProgress(description, total, initial, stream, self.progress)

    def check_finite(self, losses: dict[str, torch.Tensor] | None = None, batch: str = "",
                     gradients: bool = True) -> None:
        """Raise if a parameter is NaN or infinite; during a step (``losses`` given,
        after ``backward()``, before ``optimizer.step()``) also if a LIF membrane of
        the step's forward, a loss term or a gradient is.

        The common case costs one reduction per tensor and one host sync: the total
        L2 norm of all of them (:func:`torch.nn.utils.get_total_norm`, fused on CUDA),
        finite only when every entry is, with each membrane represented by
        :attr:`g2g.snn.neurons.LIF.last_membrane_peak`. Only when it is not finite are
        the tensors checked one by one, exactly (a norm that overflowed on huge finite
        values raises nothing). Parameters are reported first (the previous step made
        them, and the rest of this step follows from them), then membranes, losses,
        gradients.

        Args:
            losses: the step's loss terms by name (``training loss``, ...), 0-d tensors.
            batch: the step's batch, for the message (``batch 3 of 8``).
            gradients: check the gradients too (with ``losses``); off with a gradient
                scaler, whose overflowing steps are skipped instead.
        Raises:
            NonFiniteLossError: a loss term is NaN or infinite.
            NonFiniteTrainingError: a parameter, membrane or gradient is.
        """
        parameters = [(name, parameter.detach()) for name, parameter in self.model.named_parameters()]
        named = list(parameters)
        if losses is not None:
            named += [(f"{name} membrane", module.last_membrane_peak) for name, module in self.model.named_modules()
                      if isinstance(module, LIF) and module.last_membrane_peak is not None]
            named += [(name, value.detach()) for name, value in losses.items()]
            if gradients:
                named += [(f"{name} gradient", parameter.grad) for name, parameter in self.model.named_parameters()
                          if parameter.grad is not None]
        if bool(torch.isfinite(torch.nn.utils.get_total_norm([value for _, value in named]))):  # the host sync
            return
        for index, (name, value) in enumerate(named):
            if bool(torch.isfinite(value).all()):
                continue
            if index < len(parameters):
                raise NonFiniteTrainingError(
                    f"the parameter {name} became {_describe_nonfinite(value)} in global step "
                    f"{self.global_step} (its optimizer step or a step callback); training stopped before "
                    f"the next optimizer step and before a checkpoint could keep it. {_NONFINITE_HINT}",
                    name, self.global_step)
            error = NonFiniteLossError if name in losses else NonFiniteTrainingError
            raise error(f"the {name} became {_describe_nonfinite(value)} at global step {self.global_step + 1} "
                        f"({batch}); the weights were not updated with it. {_NONFINITE_HINT}",
                        name, self.global_step + 1)

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
            with self._autocast(x):
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
