"""Quantities logged beside training that never steer it (the error-bound monitor, METHOD.md §6)."""

from cetl.monitor.bound import BOUND_KEYS, bound_terms, gaussian_mmd

__all__ = ["BOUND_KEYS", "bound_terms", "gaussian_mmd"]
