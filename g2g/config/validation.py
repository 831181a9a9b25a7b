"""Checks of a composed config before any expensive work starts.

Hydra and OmegaConf already refuse, while composing, a key that no option of a group
has and a value of the wrong type (the structured schemas of :mod:`g2g.config.schema`).
:func:`validate` adds what composition cannot see:

- interpolations that do not resolve (``train.lr=${model.p_inter}`` with a model that
  has no ``p_inter``, ``${oc.env:UNSET}``, an unknown resolver):
  :func:`check_interpolations`, which :func:`g2g.run.job.run_job` calls before it reads
  any value, so a broken interpolation anywhere in the config is a :class:`ConfigError`
  naming the key (exit 2), in a single run and in every job of a sweep;
- the allowed values of every key (each schema field's ``check``, e.g.
  ``model.p_inter=1.5: must be a probability in [0, 1]``);
- keys the selected option does not use (Hydra's ``+key=value`` appends them without
  a check), named with the option they belong to, and required keys left empty;
- the rules that relate several keys (a group needs a neuron; DST needs a sparse
  model; ResNet features need CIFAR and a weights file).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import GrammarParseError, InterpolationKeyError, InterpolationResolutionError

from g2g.config.schema import SCHEMAS

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


#: what an interpolation may name, said once after its problems
INTERPOLATION_HELP = ("an interpolation names a key of this config (${model.hidden_dim}) or a resolver "
                      "(${oc.env:HOME}, ${oc.env:NAME,default})")
#: an interpolation of another key, as it appears in a value (``${train.lr}``)
_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


def _missing_key_reason(cfg: DictConfig, reference: str) -> str:
    """Why the key ``reference`` (``model.p_inter``) does not exist, naming the options
    of its group that have it when the selected one does not."""
    group, _, key = reference.partition(".")
    users = _options_with_key(group, key.split(".")[0]) if group in SCHEMAS and key else []
    if not users and reference in os.environ:  # a shell's ${NAME} is a key to OmegaConf
        return f"there is no key {reference} (for the environment variable write ${{oc.env:{reference}}})"
    selected = OmegaConf.select(cfg, f"{group}.name", default=None, throw_on_resolution_failure=False)
    if not users or selected in users:
        return f"there is no key {reference}"
    return (f"there is no key {reference}: {group}={selected} does not have {key} "
            f"({' / '.join(f'{group}={user}' for user in users)} do)")


def _reason(cfg: DictConfig, error: Exception) -> str:
    """OmegaConf's reason for ``error`` in one line, in the words of this config."""
    reason = str(error).splitlines()[0].removeprefix("KeyError raised while resolving interpolation: ")
    reason = re.sub(r"^While dereferencing interpolation '.*?': ", "", reason)  # the value already says which
    missing_key = re.fullmatch(r"Interpolation key '(.+)' not found", reason)
    if isinstance(error, InterpolationKeyError) and missing_key:
        return _missing_key_reason(cfg, missing_key.group(1))
    unknown_resolver = re.fullmatch(r"Unsupported interpolation type (.+)", reason)
    if unknown_resolver:
        return f"there is no resolver named {unknown_resolver.group(1)!r}"
    return reason.strip('"')


def _unresolved(node: DictConfig | ListConfig, path: str = "") -> dict[str, tuple[str, Exception]]:
    """Every value below ``node`` that does not resolve: dotted key -> (the value as
    written, OmegaConf's error). Hydra's own node and values still missing (``???``,
    :func:`schema_problems` reports them) are left out."""
    unresolved = {}
    keys = range(len(node)) if isinstance(node, ListConfig) else node.keys()
    for key in keys:
        dotted = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
        if (not path and key == "hydra") or OmegaConf.is_missing(node, key):
            continue
        try:
            value = node[key]
        except (InterpolationResolutionError, GrammarParseError) as error:
            unresolved[dotted] = (str(node._get_node(key)._value()), error)
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            unresolved.update(_unresolved(value, dotted))
    return unresolved


def interpolation_problems(cfg: DictConfig, under: str = "") -> list[str]:
    """One line for every value of ``cfg`` whose interpolation does not resolve (a key
    that does not exist, an unknown resolver, a resolver that fails such as
    ``${oc.env:UNSET}``, a result of the wrong type): the key, the value as written and
    why (``train.lr='${model.p_inter}': cannot be resolved: there is no key model.p_inter:
    model=dense does not have p_inter (model=index / ... do)``). A value that only fails
    because it refers to another failing key says so.

    Args:
        cfg: the whole config (interpolations are resolved in it).
        under: only the values below this dotted key (``tracking``); default: all.
    """
    node = OmegaConf.select(cfg, under) if under else cfg
    unresolved = _unresolved(node, under) if isinstance(node, (DictConfig, ListConfig)) else {}
    problems = []
    for dotted, (raw, error) in unresolved.items():
        broken = [reference for reference in _REFERENCE.findall(raw) if reference in unresolved]
        reason = (f"it refers to {', '.join(broken)}, which cannot be resolved" if broken
                  else _reason(cfg, error))
        problems.append(f"{dotted}={raw!r}: cannot be resolved: {reason}")
    return problems


def check_interpolations(cfg: DictConfig, under: str = "") -> None:
    """Resolve every interpolation of ``cfg`` (or of the values below the dotted key
    ``under``) once, before anything reads a value.

    Raises:
        ConfigError: listing each value that does not resolve (:func:`interpolation_problems`),
            then what an interpolation may name.
    """
    problems = interpolation_problems(cfg, under)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems) + f"\n({INTERPOLATION_HELP})")


def _unused_key(path: str, node: DictConfig, key: str) -> str:
    group = path.split(".")[0]
    option = node.get("name") if group in SCHEMAS else None
    users = _options_with_key(group, key) if group in SCHEMAS else []
    where = f"{group}={option}" if option else f"'{path}'" if path else "the primary config"
    message = f"{f'{path}.' if path else ''}{key}={node[key]!r}: {where} does not use this key"
    if users:
        owners = " / ".join(f"{group}={user}" for user in users)
        return message + f"; it belongs to {owners} (select that option instead)"
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
    """Check that every interpolation resolves, the allowed value of every key, keys the
    selected options do not use, required keys and the relations between keys.

    Raises:
        ConfigError: listing every problem as ``key=value: what is allowed``.
    """
    check_interpolations(cfg)  # the checks below read resolved values
    problems = schema_problems(cfg)
    if not problems:  # relations assume each key's own value is good
        problems = relation_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
