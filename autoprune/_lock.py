"""One process at a time in a run directory.

:class:`RunLock` holds an exclusive ``flock`` on ``DIR/.lock`` while a command works in the
directory. The operating system releases it when the process ends, however it ends
(``kill -9`` included), so a dead process never holds a directory.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with RunLock(d):
    ...     RunLock(d).__enter__()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    autoprune.errors.ConfigError: run directory ...: another autoprune process ...
"""

from __future__ import annotations

import fcntl
import os

from .errors import ConfigError


class RunLock:
    """An exclusive lock on a run directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, ".lock")
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"run directory {self.directory}: another autoprune process (pid {holder}) "
                "is working in it; wait for it to end, or give another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
