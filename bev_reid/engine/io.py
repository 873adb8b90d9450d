"""Atomic file writes: write to a temporary name in the same folder, then rename into place.

A crash at any moment leaves either the old file or the new one, never half of one, so readers
never take a partial file for a whole one. Finished files get the permissions the umask gives a
plain ``open`` (0644 under the usual 022), not the 0600 of a temporary file, so others can read a
shared run. A temporary file names the process that writes it (``.NAME.PID.RANDOM.tmp``), so
:func:`sweep_stale_tmp` can delete those a killed process left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Opens a temporary sibling of ``path`` for writing; renames it to ``path`` on success.

    The temporary file starts with ``.`` and ends with ``.tmp`` so folder watchers skip it.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # Checked before the temporary file goes and frees its blocks. numpy's writes report a
        # full device as a short write, with no errno.
        full = is_disk_full(e, path.parent)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if full:
            raise DiskFullError(errno.ENOSPC, disk_full_message(path)) from e
        raise


class DiskFullError(OSError):
    """No room left on a device (or over quota) for a file being written."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def disk_full_message(path: str | os.PathLike, needed: int | None = None) -> str:
    """The message of a full device: the file, its folder's free space and, if known, the need."""
    path = Path(path)
    try:
        free = f"; {human_bytes(shutil.disk_usage(path.parent).free)} free there"
    except OSError:
        free = ""
    need = "" if needed is None else f" ({human_bytes(needed)})"
    return f"no space left on the device of {path.parent} for {path.name}{need}{free}"


def is_disk_full(error: BaseException, folder: str | os.PathLike) -> bool:
    """Whether ``error`` means the device of ``folder`` is full: ENOSPC or EDQUOT, or an OSError
    with no errno (numpy's short write) while less than 1 MiB is left there for this user."""
    if not isinstance(error, OSError):
        return False
    if error.errno is not None:
        return error.errno in DISK_FULL
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20


def reserve_space(
    path: str | os.PathLike, size: int, target: str | os.PathLike | None = None
) -> None:
    """Allocates the first ``size`` bytes of the existing file ``path`` on disk (``target``:
    the file it will become, which an error names).

    A memory map of a sparse file writes its blocks only when its pages are written; on a full
    disk that kills the process with SIGBUS, with no error to catch. Reserved first, a full disk
    is a :class:`DiskFullError` here instead. Filesystems without ``fallocate`` are left to the
    write itself.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if is_disk_full(e, Path(path).parent):
            raise DiskFullError(e.errno, disk_full_message(target or path, size)) from e
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask


_TMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files of :func:`atomic_open` in ``folder`` (not below it) whose
    writing process is gone (killed mid-write); returns what it deleted. Files of live
    processes, and temporary files of other programs, are left alone."""
    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        m = _TMP.match(p.name)
        if m and p.is_file() and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


FIGURE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg", ".jpg": "jpeg", ".jpeg": "jpeg"}


def figure_format(path: str | os.PathLike) -> str:
    """The matplotlib format a picture path asks for by its suffix (ValueError if none fits)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise ValueError(
            f"cannot tell a picture format from {str(path)!r}: name it .png, .pdf, .svg or .jpg"
        )
    return FIGURE_FORMATS[suffix]


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Writes a matplotlib figure atomically, in the format its suffix names."""
    fmt = figure_format(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=fmt, **savefig_kwargs)
    return Path(path)
