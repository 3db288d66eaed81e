"""SIGTERM handled like Ctrl-C, so a scheduler's stop costs no more than a keypress.

Batch schedulers (SLURM, Kubernetes, ``timeout``) stop a job with SIGTERM, which by
default kills Python on the spot. Inside :func:`terminate_as_interrupt` it raises
:class:`Terminated` instead, a ``KeyboardInterrupt``, so exactly the code paths of Ctrl-C
run: ``finally`` blocks close the log, a write in progress leaves the previous file whole
(every run file is written atomically), and the last finished round's ``last.pt`` is
what ``--resume`` continues from. The CLI then exits with 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM; raised in the main thread at the next bytecode."""

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated`; the previous handler comes back after.

    Python runs signal handlers only in the main thread, so elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"received signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
