"""Commands that g2g prints for a person to run, quoted for a POSIX shell.

Every command g2g writes into a message, a log line, a generated page or an MLflow tag
is built here, so that pasting it into bash runs exactly the arguments g2g meant, even
when a name or path holds spaces, quotes or ``$``::

    >>> shell_command("python", "-m", "g2g.report", "my study", "--page", "docs/it's.md")
    "python -m g2g.report 'my study' --page 'docs/it'\"'\"'s.md'"
    >>> shell_command("mlflow", "ui", env={"MLFLOW_TRACKING_URI": "sqlite:///a b/mlflow.db"})
    "MLFLOW_TRACKING_URI='sqlite:///a b/mlflow.db' mlflow ui"

A Hydra override (``key=value`` on ``run.py``'s command line) is parsed twice, by the
shell and then by Hydra, whose grammar gives ``,``, brackets, quotes and ``${`` a
meaning: :func:`hydra_override` quotes the value for Hydra, and :func:`shell_command`
then quotes the whole argument for the shell. Importing this module imports nothing
but the standard library.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping

#: an environment variable's name as a POSIX shell accepts it in ``NAME=value command``
_ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: the characters a Hydra override value may hold without quotes and mean itself
_HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_./:+@%-]+")
#: plain values that Hydra would not read as a string (numbers, booleans, null; a few more
#: than it reads so are quoted too, which is harmless)
_HYDRA_TYPED = re.compile(r"[-+0-9._eE]+|true|false|null|[-+]?(inf|nan)", re.IGNORECASE)


def shell_command(*argv: str | os.PathLike, env: Mapping[str, str | os.PathLike] | None = None) -> str:
    """The command ``argv`` (program first) as one line to paste into a POSIX shell:
    each argument quoted with :func:`shlex.quote` when it needs it, preceded by
    ``NAME=value`` assignments for ``env`` (for this command only).

    Args:
        argv: the program and its arguments; paths are written as ``str(path)``.
        env: environment variables the command needs, in the order given.
    Raises:
        ValueError: no program, or an ``env`` name the shell would not take as a variable.
    """
    if not argv:
        raise ValueError("shell_command needs at least the program to run")
    assignments = []
    for name, value in (env or {}).items():
        if not _ENVIRONMENT_NAME.fullmatch(name):
            raise ValueError(f"environment variable name {name!r} is not one a shell accepts "
                             "(letters, digits and _, not starting with a digit)")
        assignments.append(f"{name}={shlex.quote(os.fspath(value))}")
    return " ".join(assignments + [shlex.quote(os.fspath(argument)) for argument in argv])


def hydra_override(key: str, value: str | os.PathLike) -> str:
    """``key=value`` as Hydra's override parser reads back ``value`` unchanged: the
    value in Hydra's single quotes (with ``\\``, ``'`` and ``${`` escaped) unless it is
    plain (letters, digits and ``_./:+@%-``, and not read as a number, boolean or null).
    Quote the result for the shell with :func:`shell_command`."""
    text = os.fspath(value)
    if _HYDRA_PLAIN.fullmatch(text) and not _HYDRA_TYPED.fullmatch(text):
        return f"{key}={text}"
    # OmegaConf (which resolves the value): n backslashes then a literal "${" are written 2n + 1 then "${"
    text = re.sub(r"(\\*)\$\{", lambda found: found.group(1) * 2 + "\\${", text)
    # Hydra's quoted string: backslashes before a quote or at the end are doubled, a quote escaped
    text = re.sub(r"(\\*)('|\Z)", lambda found: found.group(1) * 2 + ("\\'" if found.group(2) else ""), text)
    return f"{key}='{text}'"
