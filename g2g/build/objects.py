"""Objects from config: the only place that instantiates the config groups.

Every config group option names its class (or function) with ``_target_``, checked
against its structured schema (:mod:`g2g.config.schema`); ``_partial_`` options are
completed here with what only the run knows (the model's input size, the optimizer's
parameters). An option that builds nothing (``sparsity=static``,
``regularizer=none``, ``features=raw``) has no ``_target_``. An option's ``name`` is
its label (checkpoint names, reports); it is passed on only to a target that takes a
``name`` argument (the data set loader, the network's label).

``load_data`` gives the data set (``dataset`` and ``features`` groups); :func:`build`
gives everything a training run trains with (``model``, ``train.optimizer``,
``sparsity``, ``regularizer``, ``encoder`` and the :class:`Trainer` around them).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from g2g.build.random_streams import stream_seed
from g2g.data.datasets import DataSplits
from g2g.hardware.precision import AUTOCAST_DTYPES, gradient_scaler
from g2g.models.network import SpikingNetwork
from g2g.sparse.dst import DynamicSparsity
from g2g.training.regularizer import FiringRateRegularizer
from g2g.training.trainer import Trainer


def instantiate(node: DictConfig, **kwargs):
    """``hydra.utils.instantiate``, but an error raised by the target itself (a
    missing data set, say) reaches the caller as it was raised, not wrapped."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        if error.__cause__ is not None:
            raise error.__cause__ from None
        raise


def instantiate_option(node: DictConfig, **kwargs):
    """Build the object a config group option describes, or None when the option has
    no ``_target_`` (it builds nothing). The option's ``name`` is passed on only when
    the target has a ``name`` parameter.

    Args:
        node: the group's node, e.g. ``cfg.sparsity``.
        kwargs: runtime arguments (e.g. ``input_dim`` of the model).
    """
    if "_target_" not in node:
        return None
    arguments = OmegaConf.to_container(node, resolve=True)  # interpolations resolve against the whole config
    if "name" not in inspect.signature(get_object(arguments["_target_"])).parameters:
        arguments.pop("name", None)
    return instantiate(OmegaConf.create(arguments), **kwargs)


def load_data(cfg: DictConfig, device: torch.device) -> DataSplits:
    """The data set on ``device``, through the ``features`` group (e.g. ResNet-32).

    Raises:
        g2g.data.datasets.DatasetUnavailableError: files missing and not fetchable.
        g2g.data.features.FeaturesUnavailableError: ResNet-32 weights cannot be loaded.
    """
    data = instantiate_option(cfg.dataset, seed=stream_seed(cfg.seed, "data_subset"), device=device)
    features = instantiate_option(cfg.features)
    return data if features is None else features(data, cfg.dataset.name)


def protocol_epochs(cfg: DictConfig) -> int:
    """The epochs of every model the protocol trains: ``protocol.epochs`` for
    cross-validation folds, else ``train.epochs``."""
    return int(cfg.protocol.epochs if "epochs" in cfg.protocol else cfg.train.epochs)


def total_optimizer_steps(cfg: DictConfig, num_train_examples: int) -> int:
    """Optimizer steps of the whole run: epochs (:func:`protocol_epochs`) x steps per
    epoch, ``ceil(num_train_examples / train.batch_size)`` (the trainer steps on every
    batch, the last partial one included)."""
    return protocol_epochs(cfg) * math.ceil(num_train_examples / cfg.train.batch_size)


@dataclass
class RunObjects:
    """What one training run trains with, built from its config.

    model: the network on the run's device. optimizer: over its parameters.
    sparsity: the DST (``sparsity=dynamic``), which the trainer runs after every step, else None.
    regularizer: the firing-rate regulariser (``regularizer=firing_rate``), else None.
    encoder: maps ``[B, D]`` to the input sequence ``[T, B, D]``.
    trainer: runs the epochs and evaluations of all of them.
    """

    model: SpikingNetwork
    optimizer: torch.optim.Optimizer
    sparsity: DynamicSparsity | None
    regularizer: FiringRateRegularizer | None
    encoder: Callable[[torch.Tensor], torch.Tensor]
    trainer: Trainer


def build(cfg: DictConfig, data: DataSplits, device: torch.device) -> RunObjects:
    """Build the run's objects for ``data`` (its input size and class count) on
    ``device``. Masks, initial weights, the training shuffle and DST each draw from
    their own stream of ``cfg.seed`` (:mod:`g2g.build.random_streams`); the rate encoder
    from torch's global generator, so seed it first (:func:`g2g.build.random_streams.seed_everything`).
    DST gets the run's total optimizer steps (:func:`total_optimizer_steps` of
    ``data``'s training split), which its stop step and prune-fraction schedule need.
    ``train.precision`` gives the trainer its autocast dtype and, for ``16-mixed``, its
    gradient scaler (:mod:`g2g.hardware.precision`)."""
    model = instantiate_option(
        cfg.model, input_dim=data.input_dim, num_classes=data.num_classes,
        mask_seed=stream_seed(cfg.seed, "masks"), init_seed=stream_seed(cfg.seed, "weight_init"),
    ).to(device)
    optimizer = instantiate(cfg.train.optimizer)(model.parameters())
    dynamic_sparsity = instantiate_option(cfg.sparsity)
    sparsity = None if dynamic_sparsity is None else dynamic_sparsity(
        model=model, optimizer=optimizer, seed=stream_seed(cfg.seed, "dst"),
        total_steps=total_optimizer_steps(cfg, len(data.train_y)))
    regularizer = instantiate_option(cfg.regularizer)
    encoder = instantiate_option(cfg.encoder)
    trainer = Trainer(
        model, optimizer, encoder, cfg.train.batch_size, eval_batch_size=cfg.train.eval_batch_size,
        shuffle_generator=torch.Generator().manual_seed(stream_seed(cfg.seed, "shuffle")),
        progress=cfg.train.progress, sparsity=sparsity, regularizer=regularizer,
        autocast_dtype=AUTOCAST_DTYPES.get(cfg.train.precision), scaler=gradient_scaler(device, cfg.train.precision),
    )
    return RunObjects(model, optimizer, sparsity, regularizer, encoder, trainer)
