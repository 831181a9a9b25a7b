"""The configuration table of docs/configuration.md, generated from ``conf/`` so it cannot drift.

    python -m g2g.config_docs            # print the Markdown table
    python -m g2g.config_docs --check    # exit 1 when docs/configuration.md's table differs

Rows come from the primary config's own keys and from every option of every config
group: the default value, and the YAML end-of-line comment as the description. Keys
that only some options of a group have say which (``with sparsity=dynamic``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from g2g.reporting.markdown import generated_block, replace_generated_block
from g2g.tracking.params import flatten

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PAGE = REPO / "docs" / "configuration.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"
SKIP = {"_target_", "_partial_", "name", "defaults"}
GROUPS = ("dataset", "model", "sparsity", "encoder", "features", "regularizer", "protocol", "hardware")


def _comments(path: Path) -> dict[str, str]:
    """Dotted key -> end-of-line comment of a simple block-style YAML file."""
    comments, stack = {}, []
    for line in path.read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w]*):(.*)$", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
        if "#" in rest:
            comments[".".join(k for _, k in stack)] = rest.split("#", 1)[1].strip()
    return comments


def _flat(node: dict) -> dict[str, object]:
    """Dotted keys of ``node`` without Hydra's and g2g's bookkeeping keys (``SKIP``)."""
    return {key: value for key, value in flatten(node).items() if not SKIP & set(key.split("."))}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def _format(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _option(group: str, option: str) -> tuple[dict, dict]:
    """Values (with its defaults list resolved within the group) and comments of one option."""
    path = CONF / group / f"{option}.yaml"
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    values, comments = {}, {}
    for parent in raw.get("defaults", []):
        if isinstance(parent, str) and parent != "_self_" and not parent.startswith("/schema/"):
            parent_values, parent_comments = _option(group, parent)
            values.update(parent_values)
            comments.update(parent_comments)
    values.update(_flat(raw))
    comments.update(_comments(path))
    return values, comments


def table() -> str:
    primary = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)
    defaults = {k: v for entry in primary["defaults"] if isinstance(entry, dict)
                for k, v in entry.items() if not k.startswith("override")}
    rows = ["| key | default | meaning |", "|---|---|---|"]
    primary_comments = _comments(CONF / "config.yaml")
    for key, value in _flat({k: v for k, v in primary.items() if k != "hydra"}).items():
        if key.startswith("train.optimizer."):  # built from train.lr (Hydra _partial_)
            continue
        rows.append(f"| `{key}` | `{_format(value)}` | {_cell(primary_comments.get(key, ''))} |")
    for group in GROUPS:
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        default = defaults[group]
        rows.append(f"| `{group}` | `{default}` | config group: {', '.join(f'`{o}`' for o in options)} |")
        per_option = {option: _option(group, option) for option in options}
        seen = []
        for option in [default] + [o for o in options if o != default]:
            values, comments = per_option[option]
            for key, value in values.items():
                if key in seen:
                    continue
                seen.append(key)
                having = [o for o in options if key in per_option[o][0]]
                choices = "\\|".join(having)  # an escaped | inside a Markdown table cell
                scope = "" if len(having) == len(options) else f" (with {group}={choices})"
                shown = per_option[default][0].get(key, value) if default in having else value
                rows.append(f"| `{group}.{key}`{scope} | `{_format(shown)}` | {_cell(comments.get(key, ''))} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m g2g.config_docs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with docs/configuration.md instead of printing")
    parser.add_argument("--write", action="store_true", help="replace docs/configuration.md's table")
    args = parser.parse_args(argv)
    generated = table()
    text = PAGE.read_text()
    if args.write:
        PAGE.write_text(replace_generated_block(text, START, END, generated))
        return 0
    if args.check:
        if generated_block(text, START, END) != generated:
            print("docs/configuration.md's table differs from conf/: run python -m g2g.config_docs --write",
                  file=sys.stderr)
            return 1
        return 0
    print(generated, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
