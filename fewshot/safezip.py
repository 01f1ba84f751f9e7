"""Reading an untrusted zip in memory: member checks from the headers, then reads with a byte budget.

Nothing is extracted to disk. :func:`check_members` refuses, from the central directory, paths that climb out
(``../``) or are absolute, links and other non-plain members (the Unix mode in the external attributes),
encrypted members, duplicate names, too many members, and sizes or compression ratios of a zip bomb;
:class:`BoundedReader` enforces the same size and ratio limits while decompressing, in bounded chunks, so a
header that lies cannot make it return more. Every refusal is one :class:`UnsafeZipError` with a message
that says what is wrong. The limits are module constants (tests lower them).
"""

from __future__ import annotations

import io
import posixpath
import stat
import zipfile
from pathlib import Path

__all__ = ["UnsafeZipError", "open_zip", "check_members", "safe_name", "is_bookkeeping", "BoundedReader",
           "MAX_FILE_BYTES", "MAX_MEMBERS", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "MAX_RATIO", "RATIO_MIN_BYTES"]

MAX_FILE_BYTES = 200 * 2**20  # the zip itself (Streamlit's default upload limit)
MAX_MEMBERS = 400
MAX_MEMBER_BYTES = 32 * 2**20  # one uncompressed member
MAX_TOTAL_BYTES = 256 * 2**20  # all members uncompressed
MAX_RATIO = 100  # uncompressed / compressed, for members above RATIO_MIN_BYTES (PNGs hardly compress at all)
RATIO_MIN_BYTES = 2**20
_READ_CHUNK = 64 * 2**10


class UnsafeZipError(ValueError):
    """A zip that is refused; the message says why."""


def _size(n: float) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB" if n >= 2**10 else f"{int(n)} bytes"


def safe_name(info: zipfile.ZipInfo) -> str:
    """The member's normalised relative path; raises for absolute, climbing, linked or odd members."""
    raw = info.filename
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise UnsafeZipError(f"member {raw!r} has a NUL character in its name; the file is damaged or hostile")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeZipError(f"member {raw!r} has an absolute path; refusing the file (relative paths only)")
    if ".." in name.split("/"):
        raise UnsafeZipError(f"member {raw!r} climbs out of the archive ('..'); refusing the file")
    mode = info.external_attr >> 16
    if info.create_system == 3:  # Unix attributes: only plain files and folders
        if stat.S_ISLNK(mode):
            raise UnsafeZipError(f"member {raw!r} is a symbolic link; refusing the file (plain files only)")
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # 0: permissions only
            raise UnsafeZipError(f"member {raw!r} is not a plain file; refusing the file (plain files only)")
    if info.flag_bits & 0x1:
        raise UnsafeZipError(f"member {raw!r} is encrypted; save the file without a password")
    return posixpath.normpath(name.rstrip("/")) + ("/" if name.endswith("/") else "")


def is_bookkeeping(name: str) -> bool:
    """macOS and hidden bookkeeping (``__MACOSX/``, ``.DS_Store``), which no reader wants."""
    parts = name.rstrip("/").split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


class BoundedReader:
    """Reads members of a checked archive with a byte budget enforced during decompression."""

    def __init__(self, archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo]):
        self.archive, self.infos, self.total = archive, infos, 0

    def read(self, name: str, limit: int | None = None) -> bytes:
        """The member's bytes; at most ``limit`` (default :data:`MAX_MEMBER_BYTES`) are decompressed."""
        limit = MAX_MEMBER_BYTES if limit is None else limit
        info = self.infos[name]
        chunks, size = [], 0
        try:
            with self.archive.open(info) as fh:
                while chunk := fh.read(_READ_CHUNK):
                    size += len(chunk)
                    self.total += len(chunk)
                    if size > limit:
                        raise UnsafeZipError(f"member {name!r} unpacks to more than {_size(limit)}, "
                                            "its limit; refusing the file")
                    if size > info.file_size:
                        raise UnsafeZipError(f"member {name!r} holds more data than its header says "
                                            f"({info.file_size} bytes); the file is damaged or a zip bomb")
                    if self.total > MAX_TOTAL_BYTES:
                        raise UnsafeZipError(f"the file unpacks to more than {_size(MAX_TOTAL_BYTES)}; "
                                            "use a smaller file")
                    if size > RATIO_MIN_BYTES and size > MAX_RATIO * max(info.compress_size, 1):
                        raise UnsafeZipError(f"member {name!r} unpacks to over {MAX_RATIO} times its packed size; "
                                            "refusing a likely zip bomb")
                    chunks.append(chunk)
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
            raise UnsafeZipError(f"member {name!r} cannot be read ({exc}); the file is damaged") from exc
        return b"".join(chunks)


def open_zip(source: bytes | str | Path) -> zipfile.ZipFile:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise UnsafeZipError(f"{path} does not exist or is not a file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UnsafeZipError(f"{path} is {_size(path.stat().st_size)}; a zip may be at most "
                                f"{_size(MAX_FILE_BYTES)}")
        source = path.read_bytes()
    if len(source) > MAX_FILE_BYTES:
        raise UnsafeZipError(f"the file is {_size(len(source))}; a zip may be at most "
                            f"{_size(MAX_FILE_BYTES)}")
    try:
        return zipfile.ZipFile(io.BytesIO(source))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise UnsafeZipError("not a zip file") from exc


def check_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Header checks on every member; returns the files by normalised name (folders and bookkeeping left out)."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise UnsafeZipError(f"the zip has {len(infos)} members (at most {MAX_MEMBERS})")
    files: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = safe_name(info)
        if name.endswith("/") or is_bookkeeping(name):
            continue
        if name in files:
            raise UnsafeZipError(f"the zip holds {name!r} twice; refusing an ambiguous file")
        if info.file_size > MAX_MEMBER_BYTES:
            raise UnsafeZipError(f"member {name!r} unpacks to {_size(info.file_size)} "
                                f"(at most {_size(MAX_MEMBER_BYTES)} per member)")
        if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise UnsafeZipError(f"member {name!r} unpacks to {info.file_size // max(info.compress_size, 1)} times "
                                f"its packed size (at most {MAX_RATIO}); refusing a likely zip bomb")
        total += info.file_size
        files[name] = info
    if total > MAX_TOTAL_BYTES:
        raise UnsafeZipError(f"the file unpacks to {_size(total)} (at most {_size(MAX_TOTAL_BYTES)}); "
                            "use a smaller file")
    return files
