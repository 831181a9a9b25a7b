"""Commands and modules that must start fast: they import neither torch nor Matplotlib
(and the configuration table not even MLflow). Each runs in a fresh interpreter, as a
user runs it, and reports which heavy packages it loaded."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

HEAVY = ("torch", "matplotlib", "mlflow")


def _loaded_after(statement: str) -> tuple[set[str], str]:
    """Run ``statement`` in a new interpreter; return the heavy packages in its
    ``sys.modules`` afterwards and what it printed."""
    program = (f"import json, sys\n{statement}\n"
               f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    *printed, loaded = result.stdout.splitlines()
    return set(json.loads(loaded)), "\n".join(printed)


def _command(module: str, *arguments: str) -> str:
    """``python -m MODULE ARGUMENTS`` inside the interpreter, its exit caught."""
    return (f"import runpy; sys.argv = [{module!r}, *{list(arguments)!r}]\n"
            f"try:\n    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
            "except SystemExit as exit:\n    assert exit.code in (None, 0, 1), exit.code")


@pytest.mark.parametrize("module", ["g2g.report", "g2g.tracking"])
def test_command_help_imports_neither_torch_nor_matplotlib_nor_mlflow(module):
    loaded, printed = _loaded_after(_command(module, "--help"))
    assert f"usage: python -m {module}" in printed
    assert loaded == set(), f"python -m {module} --help imported {loaded}"


@pytest.mark.parametrize("arguments", [[], ["--check"]])
def test_config_table_imports_neither_torch_nor_matplotlib_nor_mlflow(arguments):
    loaded, printed = _loaded_after(_command("g2g.config_docs", *arguments))
    if not arguments:
        assert printed.startswith("| key | default | meaning |")
    assert loaded == set(), f"python -m g2g.config_docs {' '.join(arguments)} imported {loaded}"


def test_sweep_callback_module_imports_neither_torch_nor_matplotlib():
    loaded, _ = _loaded_after("from g2g.tracking.sweep_callback import MlflowSweepCallback")
    assert loaded <= {"mlflow"}, f"the sweep callback module imported {loaded}"
