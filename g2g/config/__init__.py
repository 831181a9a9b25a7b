"""The config: its structured schema, its validation, and its paths made absolute."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "schema": ["register", "SCHEMAS"],
    "validation": ["validate", "check_interpolations", "ConfigError"],
    "paths": ["absolute_paths"],
})
