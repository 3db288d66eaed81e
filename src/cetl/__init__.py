"""cetl: Coupled End-to-end Transfer Learning and the methods it is measured against.

Chen, Zhang, Dong, "Coupled End-to-End Transfer Learning with Generalized Fisher
Information", CVPR 2018. See ``docs/`` for the method as implemented and the design.

``cetl.adapt(source=..., target_data=...)`` trains a target network on your own data with a
frozen source (``docs/adapt.md``); it is the function behind ``cetl adapt``.
"""

from __future__ import annotations

from typing import Any

from cetl.version import __version__

__all__ = ["Result", "__version__", "adapt"]

_WORKFLOW_EXPORTS = frozenset({"Result", "adapt"})


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): every ``cetl.x`` import runs this file first, so importing the adapt
    # workflow here would make each layer import the top of the graph (an import cycle).
    if name in _WORKFLOW_EXPORTS:
        from cetl.workflows import adapt as workflow

        return getattr(workflow, name)
    raise AttributeError(f"module 'cetl' has no attribute {name!r}")
