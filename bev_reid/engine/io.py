"""Atomic file writes: write to a temporary name in the same folder, then rename into place.

A crash at any moment leaves either the old file or the new one, never half of one, so readers
never take a partial file for a whole one.
"""

from __future__ import annotations

import contextlib
import os
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
