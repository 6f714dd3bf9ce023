"""A cross-process lock so that latency measurements on one machine never overlap.

Simulated clients run in separate processes. Each measurement holds an exclusive
``fcntl.flock`` on one lock file for its whole duration, so two measurements that
use the same lock file never run at the same time. ``flock`` locks belong to an
open file description, so two threads of one process that each call
:func:`measurement_lock` also exclude each other.
The kernel drops the lock when its holder exits, even after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

from nas.errors import ApfpError

logger = logging.getLogger(__name__)

LOCK_ENV_VAR = "APFP_NAS_LATENCY_LOCK"
DEFAULT_LOCK_NAME = "apfp-nas-latency.lock"
DEFAULT_TIMEOUT_S = 600.0
_POLL_INTERVAL_S = 0.01


class LatencyLockTimeout(ApfpError, TimeoutError):
    """The measurement lock was not acquired within the allowed wait."""


def default_lock_path() -> Path:
    """Return ``$APFP_NAS_LATENCY_LOCK`` if set, else a fixed file in the system temp dir."""
    configured = os.environ.get(LOCK_ENV_VAR)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / DEFAULT_LOCK_NAME


@contextlib.contextmanager
def measurement_lock(path: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[float]:
    """Hold the exclusive measurement lock inside the ``with`` block; yield the wait in seconds.

    ``path`` defaults to :func:`default_lock_path`. Waiting longer than ``timeout_s``
    seconds raises :class:`LatencyLockTimeout` naming the lock file.
    """
    lock_path = Path(path) if path is not None else default_lock_path()
    if timeout_s < 0:
        raise ValueError(f"timeout_s={timeout_s!r} is invalid; use a non-negative number of seconds")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            waited = time.monotonic() - started
            if waited >= timeout_s:
                raise LatencyLockTimeout(
                    f"timed out after {waited:.1f} s waiting for the latency measurement lock "
                    f"{str(lock_path)!r}; another process is measuring. Wait for it to finish, raise "
                    f"the timeout, or set {LOCK_ENV_VAR} to a different file"
                )
            time.sleep(_POLL_INTERVAL_S)
        waited = time.monotonic() - started
        if waited > 1.0:
            logger.info("waited %.1f s for latency measurement lock %s", waited, lock_path)
        try:
            yield waited
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
