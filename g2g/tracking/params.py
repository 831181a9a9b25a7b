"""A nested config as MLflow params: dotted keys. Imports nothing heavy, so that
:mod:`g2g.config_docs` can use it without MLflow."""

from __future__ import annotations


def flatten(container: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become their string form."""
    flat: dict[str, object] = {}
    for key, value in container.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
