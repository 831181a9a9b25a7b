"""The documentation stays usable: README.md is a short front door whose commands still
compose and whose make targets exist, and every relative link of README.md and docs/
leads to a file (and heading) that exists."""

from __future__ import annotations

import functools
import itertools
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code spans (no links live there)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _code_lines(text: str) -> list[str]:
    """Lines of the fenced code blocks, a backslash continuation joined to its line."""
    lines = []
    for block in FENCE.finditer(text):
        body = "\n".join(block.group(0).splitlines()[1:-1]).replace("\\\n", " ")
        lines += [line.strip() for line in body.splitlines()]
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def _anchors(path: Path) -> set[str]:
    anchors, seen = set(), {}
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", path.read_text()), re.M):
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links() -> list[tuple[Path, str]]:
    return [(page, target) for page in PAGES for target in LINK.findall(_prose(page.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: are not files


@pytest.mark.parametrize("page, target", _links(), ids=lambda value: str(value).replace(str(REPO_ROOT), ""))
def test_relative_links_lead_to_existing_files_and_headings(page, target):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.name}: link to {target}, but {resolved} does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), f"{page.name}: link to {target}, but {resolved.name} has no such heading"


def test_readme_is_a_front_door():
    assert len(README.read_text().splitlines()) <= 150, "the manual belongs in docs/ (README.md at most 150 lines)"


def _run_commands() -> list[list[str]]:
    return [shlex.split(line, comments=True)[2:] for line in _code_lines(README.read_text())
            if line.startswith("python run.py")]


def _jobs(arguments: list[str]) -> tuple[bool, list[list[str]]]:
    """Whether the command runs in multirun mode (-m), and its jobs: one list of overrides per
    combination of the values of its sweep overrides (``key=a,b``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    multirun = "-m" in arguments or "--multirun" in arguments
    overrides = [a for a in arguments if a not in ("-m", "--multirun")]
    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            choices.append([f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return multirun, [list(job) for job in itertools.product(*choices)]


def test_readme_shows_run_commands():
    commands = [" ".join(arguments) for arguments in _run_commands()]
    assert any(command.startswith("-m ") for command in commands), "a first sweep"
    assert any("study=" in command for command in commands)
    assert any("hparams_search=" in command for command in commands)


def _compose_and_validate(arguments: list[str]) -> None:
    """Compose ``python run.py ARGUMENTS`` as run.py composes it (Hydra's config loader on the
    real conf/, multirun mode for -m, a study or a search), once per job of a sweep, and pass
    g2g's validation."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    from g2g.config.validation import validate

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(REPO_ROOT / "conf")))
    multirun, jobs = _jobs(arguments)
    for job in jobs:
        mode = RunMode.MULTIRUN if multirun or any(o.startswith(("study=", "hparams_search=")) for o in job) \
            else RunMode.RUN
        cfg = loader.load_configuration("config", overrides=job, run_mode=mode)
        if any(o.startswith(("study=", "hparams_search=")) for o in job):
            assert cfg.hydra.mode == RunMode.MULTIRUN, f"{' '.join(arguments)} needs no -m"
        validate(cfg)


@pytest.mark.parametrize("arguments", _run_commands(), ids=" ".join)
def test_readme_run_commands_compose_and_validate(arguments):
    """Each ``python run.py ...`` of the README composes and validates."""
    _compose_and_validate(arguments)


# the make targets that train (docs/results.md reproduces its sections with them)
TRAINING_TARGETS = ["run", "sweep", "results", "published", "tuned", "precision"]


def _make_run_commands(target: str) -> list[list[str]]:
    """The ``run.py`` arguments of each command ``make -n TARGET`` prints (backslash continuations
    joined). A ``$(...)`` substitution, which the shell fills in at run time (``make tuned``'s
    best trial), is left out: what remains must compose by itself."""
    printed = subprocess.run(["make", "-n", "-C", str(REPO_ROOT), target], capture_output=True, text=True,
                             check=True).stdout.replace("\\\n", " ")
    commands = []
    for line in printed.splitlines():
        words = shlex.split(re.sub(r"\$\([^()]*\)", "", line))
        if "run.py" in words:
            commands.append(words[words.index("run.py") + 1:])
    return commands


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", TRAINING_TARGETS)
def test_make_targets_run_commands_compose_and_validate(target):
    """What ``make TARGET`` would run composes and validates: a typo in the Makefile's overrides
    fails here, not hours into ``make results`` or ``make tuned``."""
    commands = _make_run_commands(target)
    assert commands, f"make -n {target} prints no run.py command"
    for arguments in commands:
        _compose_and_validate(arguments)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_tuned_searches_and_retrains_each_model():
    """``make tuned`` runs, for every model of TUNED_MODELS, its search and then the retraining of
    its best trial on seeds 42-44 (in that order), and the untuned defaults of every model."""
    commands = _make_run_commands("tuned")
    for model in ["dense", "dense_matched", "index", "random", "mixer"]:
        search = [i for i, c in enumerate(commands) if "hparams_search=lif_quick" in c and f"model={model}" in c]
        retrain = [i for i, c in enumerate(commands) if f"hydra.sweep.dir=multirun/tuned/best_{model}" in c]
        assert len(search) == len(retrain) == 1 and search[0] < retrain[0], (model, commands)
        assert {f"model={model}", "seed=42,43,44"} <= set(commands[retrain[0]])
    untuned = [c for c in commands if "hydra.sweep.dir=multirun/tuned/untuned" in c]
    assert len(untuned) == 1 and "model=dense,dense_matched,index,random,mixer" in untuned[0]
