"""Where data comes from: an explicit folder, ``CETL_DATA_ROOT``, or a download cache.

Resolution order (first wins):

1. ``--data-root DIR`` (or ``data_root=`` in the Python API);
2. the ``CETL_DATA_ROOT`` environment variable;
3. a per-user cache folder (``$XDG_CACHE_HOME/cetl/data``, default ``~/.cache/cetl/data``)
   where torchvision downloads missing datasets as usual.

Only the cache folder downloads: a folder the user named is treated as read-only
truth, so a typo in it fails at once (naming the folder and the files expected)
instead of silently downloading a second copy somewhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "CETL_DATA_ROOT"


@dataclass(frozen=True)
class DataRoot:
    """A resolved data location.

    Attributes:
        path: folder in torchvision's on-disk layout (``MNIST/raw``, ``USPS/``, ...).
        origin: how it was chosen: ``option``, ``env``, ``cache``, ``sample``, or ``run`` (the
            root a run recorded, reused to resume or re-read it).
        download: whether missing datasets may be downloaded into ``path``.
    """

    path: Path
    origin: str
    download: bool

    def describe(self) -> str:
        """Human-readable origin, for error messages and run summaries."""
        return {
            "option": f"{self.path} (from --data-root)",
            "env": f"{self.path} (from ${ENV_VAR})",
            "cache": f"{self.path} (download cache)",
            "sample": "the small real digit sample bundled with cetl",
            "run": f"{self.path} (recorded by the run)",
        }[self.origin]


def user_cache_dir() -> Path:
    """The per-user cache folder for downloads (XDG convention)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "cetl" / "data"


def resolve_data_root(explicit: str | os.PathLike[str] | None = None) -> DataRoot:
    """Pick the data root by the order in the module docstring."""
    if explicit is not None and str(explicit) != "":
        return DataRoot(Path(explicit).expanduser().absolute(), "option", download=False)
    env = os.environ.get(ENV_VAR)
    if env:
        # Absolute now, so a relative root (the README's ../shared/datasets) survives a chdir.
        return DataRoot(Path(env).expanduser().absolute(), "env", download=False)
    return DataRoot(user_cache_dir(), "cache", download=True)


def sample_root() -> DataRoot:
    """The bundled offline sample (see ``cetl.data.sample``)."""
    return DataRoot(Path(__file__).parent / "sample", "sample", download=False)
