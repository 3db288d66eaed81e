"""User-facing errors.

Every mistake a user can make (a bad config key, a missing dataset, a corrupt
checkpoint) is raised as a :class:`CetlError` subclass whose message says what
was wrong, what was expected and how to fix it. The CLI turns these into a
one-paragraph message and a non-zero exit code instead of a traceback from deep
inside torch.
"""

from __future__ import annotations


class CetlError(Exception):
    """Base class for errors caused by user input; the CLI prints them without a traceback."""

    exit_code: int = 1


class ConfigError(CetlError, ValueError):
    """A config file, override or experiment name is invalid (exit code 2, like argparse)."""

    exit_code = 2


class DataError(CetlError):
    """A dataset is missing, incomplete or cannot be downloaded."""


class RunError(CetlError):
    """A run folder or checkpoint is missing, incompatible or corrupt."""
