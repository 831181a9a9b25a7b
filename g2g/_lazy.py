"""Lazy re-exports for the subpackages' ``__init__`` (PEP 562 module ``__getattr__``).

A package lists its public names by the module that defines them; a name is
imported from that module the first time someone reads it, so importing the
package alone imports nothing heavy (``import g2g.tracking`` does not import torch,
``import g2g.snn`` does not import MLflow)::

    __all__, __getattr__, __dir__ = lazy_exports(__name__, {
        "kernels": ["LIFScan", "SpikeLinear"],
        "neurons": ["LIF"],
    })

``from g2g.snn import LIF`` and ``g2g.snn.LIF`` then import ``g2g.snn.neurons``.
Submodules stay reachable as usual (``from g2g.snn import kernels``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """The ``__all__``, ``__getattr__`` and ``__dir__`` of a package whose public
    names are imported on first use.

    Args:
        package: the package's ``__name__``.
        exports: submodule name (relative to ``package``) -> the public names it defines.
    Returns:
        ``(__all__, __getattr__, __dir__)`` to assign at the package's top level.
    Raises:
        ValueError: a name is listed under two submodules.
        AttributeError: (from ``__getattr__``) a name the package does not export;
            also what lets ``from package import submodule`` import the submodule.
    """
    module_of: dict[str, str] = {}
    for module, names in exports.items():
        for name in names:
            if name in module_of:
                raise ValueError(f"{package}: {name!r} listed under both {module_of[name]!r} and {module!r}")
            module_of[name] = module

    def __getattr__(name: str) -> object:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        setattr(sys.modules[package], name, value)  # later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(module_of))

    return list(module_of), __getattr__, __dir__
