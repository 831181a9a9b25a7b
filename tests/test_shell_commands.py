"""Every command g2g prints for a person to run works when pasted into bash, whatever
the names and paths in it (spaces, quotes, ``$``, backticks): the helper that builds
them (:mod:`g2g.shell`), run through a real ``bash -c``."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from g2g.shell import hydra_override, shell_command

AWKWARD = ["a b", "it's", 'say "hi"', "$HOME", "`date`", "a;b", "*", "~", "", "new\nline", "back\\slash", "-x"]


@pytest.fixture(scope="module")
def shell_bin(tmp_path_factory) -> Path:
    """A folder whose ``python`` runs this interpreter (the commands say ``python``)."""
    folder = tmp_path_factory.mktemp("bin")
    (folder / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (folder / "python").chmod(0o755)
    return folder


def _bash(command: str, cwd: Path, shell_bin: Path) -> subprocess.CompletedProcess:
    """``command`` as a person pastes it: ``bash -c`` with this interpreter as ``python``
    and MLflow's CLI on the PATH."""
    path = os.pathsep.join([str(shell_bin), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.update(PATH=path, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _echo_argv(*arguments: str) -> list[str]:
    return [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *arguments]


# --- the helper -------------------------------------------------------------------------

def test_shell_command_leaves_plain_words_alone():
    assert shell_command("python", "-m", "g2g.report", "g2g", "--page", "docs/results.md") == (
        "python -m g2g.report g2g --page docs/results.md")
    assert shell_command("rm", Path("/tmp/x.DONE")) == "rm /tmp/x.DONE"


def test_bash_gets_back_every_argument_of_a_shell_command(tmp_path, shell_bin):
    result = _bash(shell_command(*_echo_argv(*AWKWARD)), tmp_path, shell_bin)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == AWKWARD
    assert shlex.split(shell_command("python", *AWKWARD)) == ["python", *AWKWARD]


def test_shell_command_sets_the_environment_for_the_command_only(tmp_path, shell_bin):
    value = "sqlite:////tmp/it's a $store/mlflow.db"
    command = shell_command(sys.executable, "-c", "import os; print(os.environ['G2G_TEST_VALUE'])",
                            env={"G2G_TEST_VALUE": value})
    assert command.startswith("G2G_TEST_VALUE=")
    result = _bash(command + "; echo \"after: ${G2G_TEST_VALUE-unset}\"", tmp_path, shell_bin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [value, "after: unset"]


@pytest.mark.parametrize("name", ["BAD-NAME", "1X", "", "A B"])
def test_shell_command_refuses_an_environment_name_a_shell_would_not_take(name):
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        shell_command("mlflow", "ui", env={name: "x"})


def test_shell_command_needs_a_program():
    with pytest.raises(ValueError, match="at least the program"):
        shell_command()


@pytest.mark.parametrize("value", ["/abs/resnet32_cifar10.pt", "/a b/x.pt", "/a,b/x.pt", "/runs/it's.pt",
                                   "/a/(b)/[c]", "/a/${x}/y", "x\\${y}", "back\\slash\\", "null", "1.5", "",
                                   'say "hi"', "$HOME/x"])
def test_a_hydra_override_survives_bash_then_hydra(value, tmp_path, shell_bin):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    result = _bash(shell_command(*_echo_argv(hydra_override("features.weights", value))), tmp_path, shell_bin)
    (argument,) = json.loads(result.stdout)
    override = OverridesParser.create().parse_override(argument)
    assert not override.is_sweep_override()
    assert OmegaConf.create({"value": override.value()}).value == value
    if value == "/abs/resnet32_cifar10.pt":
        assert argument == f"features.weights={value}", "a plain path is left as it is"
