"""Opening the files a user names: regular files only, and never more bytes than a limit.

``open()`` on a named pipe blocks until something writes to it, and a character device (``/dev/zero``)
never ends. Every checkpoint and image path goes through :func:`read_regular_file`, which looks at the
path with ``os.stat`` before opening it, opens it without blocking, checks again on the open descriptor
(the path may have been swapped in between) and reads at most ``max_bytes``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["NotARegularFileError", "FileTooLargeError", "file_kind", "read_regular_file"]

_NONBLOCK = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


class NotARegularFileError(ValueError):
    """A folder, named pipe, device or socket where a file was expected; ``kind`` says which."""

    def __init__(self, path: Path, kind: str):
        super().__init__(f"{path} is {kind}, not a regular file")
        self.kind = kind


class FileTooLargeError(ValueError):
    """A file larger than the limit for its kind; the message gives both sizes."""


def file_kind(mode: int) -> str:
    """``'a folder'``, ``'a named pipe (FIFO)'``, ... for an ``st_mode`` that is not a regular file."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a broken link"
    return "not a regular file"


def _check(mode: int, size: int, path: Path, max_bytes: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotARegularFileError(path, file_kind(mode))
    if size > max_bytes:
        raise FileTooLargeError(f"{path} is {size / 1e6:.1f} MB, more than the {max_bytes / 1e6:.0f} MB limit")


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """The whole content of the regular file ``path``, at most ``max_bytes`` long.

    Raises:
        FileNotFoundError, PermissionError, OSError: as ``open`` would.
        NotARegularFileError: ``path`` is a folder, FIFO, device or socket (nothing is opened that could block).
        FileTooLargeError: the file is larger than ``max_bytes`` (also when it grows while being read).
    """
    path = Path(path)
    info = os.stat(path)
    _check(info.st_mode, info.st_size, path, max_bytes)
    fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    try:
        opened = os.fstat(fd)
        _check(opened.st_mode, opened.st_size, path, max_bytes)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise FileTooLargeError(f"{path} grew past the {max_bytes / 1e6:.0f} MB limit while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)
