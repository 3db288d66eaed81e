"""cetl: Coupled End-to-end Transfer Learning and the methods it is measured against.

Chen, Zhang, Dong, "Coupled End-to-End Transfer Learning with Generalized Fisher
Information", CVPR 2018. See ``docs/`` for the method as implemented and the design.

``cetl.adapt(source=..., target_data=...)`` trains a target network on your own data with a
frozen source (``docs/adapt.md``); it is the function behind ``cetl adapt``.
"""

__version__ = "0.1.0"

# Imported eagerly on purpose: binding the function after its submodule has loaded keeps the
# package attribute ``cetl.adapt`` the function for good (``from cetl.adapt import X`` still
# reads the module). The module imports torch lazily, so ``import cetl`` and the CLI stay fast.
from cetl.adapt import Result, adapt

__all__ = ["Result", "__version__", "adapt"]
