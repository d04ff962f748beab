"""Files appear complete or not at all: everything is written under a hidden name beside its final path and
renamed onto it when complete (a rename is atomic on one file system); after an error or an interruption
the hidden file is removed and nothing under the final name changes."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def staging_path(path: str | os.PathLike) -> Path:
    """The hidden name that ``path`` is written under: ``.NAME.partial`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


@contextmanager
def staged(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the staging path of ``path``; rename it onto ``path`` when the block completes, remove it if not."""
    final = Path(path)
    tmp = staging_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with staged(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def disk_full(err: BaseException, folder: str | os.PathLike) -> bool:
    """Whether ``err`` came from a full disk: it says so, or (GDAL's errors often say only "write error" or
    "seek error") it is an error and less than 1 MB is left in ``folder``. Ask before removing the hidden files
    of the failed writing, which free the space."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or "No space left on device" in str(err):
        return True
    try:
        return isinstance(err, Exception) and shutil.disk_usage(folder).free < 1_000_000
    except OSError:
        return False
