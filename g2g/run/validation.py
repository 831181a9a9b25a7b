"""Checks of a composed config before any expensive work starts.

Hydra and OmegaConf already refuse, while composing, a key that no option of a group
has and a value of the wrong type (the structured schemas of :mod:`g2g.run.schema`).
:func:`validate` adds what composition cannot see:

- the allowed values of every key (each schema field's ``check``, e.g.
  ``model.p_inter=1.5: must be a probability in [0, 1]``);
- keys the selected option does not use (Hydra's ``+key=value`` appends them without
  a check), named with the option they belong to, and required keys left empty;
- the rules that relate several keys (a group needs a neuron; DST needs a sparse
  model; ResNet features need CIFAR and a weights file).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from g2g.run.schema import SCHEMAS

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


class ConfigError(ValueError):
    """One or more config values are not allowed; the message lists each."""


def _options_with_key(group: str, key: str) -> list[str]:
    """The options of ``group`` (``conf/GROUP/*.yaml``) whose schema has ``key``."""
    schemas = {name for name, schema in SCHEMAS.get(group, {}).items()
               if key in {f.name for f in dataclasses.fields(schema)}}
    options = []
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        found = re.search(rf"/schema/{group}/(\w+)@_here_", path.read_text())
        if found and found.group(1) in schemas:
            options.append(path.stem)
    return options


def _unused_key(path: str, node: DictConfig, key: str) -> str:
    group = path.split(".")[0]
    option = node.get("name") if group in SCHEMAS else None
    users = _options_with_key(group, key) if group in SCHEMAS else []
    where = f"{group}={option}" if option else f"'{path}'" if path else "the primary config"
    message = f"{f'{path}.' if path else ''}{key}={node[key]!r}: {where} does not use this key"
    if users:
        return message + f"; it belongs to {' / '.join(f'{group}={user}' for user in users)} (select that option instead)"
    allowed = ", ".join(f.name for f in dataclasses.fields(OmegaConf.get_type(node)) if not f.name.startswith("_"))
    return message + f"; its keys are: {allowed}"


def schema_problems(node: DictConfig, path: str = "") -> list[str]:
    """Problems of every schema-typed node below ``node``: keys the schema does not
    have, required keys without a value and values its fields' checks refuse."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return []
    fields = {f.name: f for f in dataclasses.fields(schema)}
    problems = []
    for key in node.keys():
        dotted = f"{path}.{key}" if path else str(key)
        if not path and key == "hydra":  # Hydra's own node, in configs composed with it
            continue
        if key not in fields:
            problems.append(_unused_key(path, node, key))
        elif OmegaConf.is_missing(node, key):
            problems.append(f"{dotted}: required, but it has no value")
        elif isinstance(node[key], DictConfig):
            problems += schema_problems(node[key], dotted)
        elif "check" in fields[key].metadata:
            problem = fields[key].metadata["check"](node[key])
            if problem:
                problems.append(f"{dotted}={node[key]!r}: {problem}")
    return problems


def relation_problems(cfg: DictConfig) -> list[str]:
    """Problems that involve several keys."""
    problems = []
    model = cfg.model
    hidden_dim, num_groups = model.get("hidden_dim"), model.get("num_groups")
    if isinstance(hidden_dim, int) and isinstance(num_groups, int) and 0 < hidden_dim < num_groups:
        problems.append(
            f"model.hidden_dim={hidden_dim!r}: must be >= model.num_groups ({num_groups}) so that "
            "every group has a neuron"
        )
    if cfg.sparsity.name == "dynamic" and (model.get("connectivity") == "dense" or "connectivity" not in model):
        problems.append(
            f"sparsity=dynamic with model={model.name!r}: a dense model is fully connected and has "
            "nothing to rewire; use model=index|random|mixer, or sparsity=static"
        )
    if cfg.features.name == "resnet32":
        if cfg.dataset.name not in ("cifar10", "cifar100"):
            problems.append(
                f"features=resnet32 with dataset={cfg.dataset.name!r}: the ResNet-32 extractor is for "
                "CIFAR images (32x32 RGB); use dataset=cifar10|cifar100, or features=raw"
            )
        weights = cfg.features.get("weights")
        if weights != "hub" and not (isinstance(weights, str) and Path(weights).expanduser().is_file()):
            problems.append(
                f"features.weights={weights!r}: must be 'hub' or the path of an existing state dict "
                "file (train one with: python -m g2g.data.features train --dataset cifar10 --out FILE)"
            )
    return problems


def removed_key_problems(arguments: list[str]) -> list[str]:
    """Problems of command-line overrides that remove a key of a config group option
    (``~model.p_inter``): every key of an option is required (Hydra would refuse the
    deletion with an OmegaConf message that says neither why nor what to do).

    Args:
        arguments: the command line's arguments (``sys.argv[1:]``).
    Returns:
        One line per removed key, naming it and the options of its group that need it.
    """
    problems = []
    for argument in arguments:
        if not argument.startswith("~"):
            continue
        group, _, key = argument[1:].split("=")[0].partition(".")
        if group not in SCHEMAS:
            continue
        if not key:
            options = sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
            problems.append(f"{argument}: the {group} group cannot be removed; choose one of its options "
                            f"({' / '.join(f'{group}={option}' for option in options)})")
            continue
        users = _options_with_key(group, key)
        if users:
            problems.append(
                f"{argument}: {group}.{key} cannot be removed: {' / '.join(f'{group}={u}' for u in users)} "
                f"require it; give it a value instead ({group}.{key}=VALUE)")
    return problems


def validate(cfg: DictConfig) -> None:
    """Check the allowed value of every key, keys the selected options do not use,
    required keys and the relations between keys.

    Raises:
        ConfigError: listing every problem as ``key=value: what is allowed``.
    """
    problems = schema_problems(cfg)
    if not problems:  # relations assume each key's own value is good
        problems = relation_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
