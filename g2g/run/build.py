"""Objects from config: every config group option names its class with ``_target_``.

An option that builds nothing (``sparsity=static``, ``regularizer=none``,
``features=raw``) has no ``_target_``; ``name`` is the option's label (checkpoint
names, reports) and never a constructor argument.
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf


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
    no ``_target_`` (it builds nothing). The option's ``name`` is not passed on.

    Args:
        node: the group's node, e.g. ``cfg.sparsity``.
        kwargs: runtime arguments (e.g. ``input_dim`` of the model).
    """
    if "_target_" not in node:
        return None
    arguments = OmegaConf.masked_copy(node, [key for key in node if key != "name"])
    return instantiate(arguments, **kwargs)
