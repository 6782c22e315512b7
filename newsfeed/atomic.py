"""Writes that are whole or absent: a temporary name in the same folder, fsync, rename
(a file), or a staging folder swapped in once complete (a set of files).

A crash or a kill mid-write leaves the previous file as it was (and a stray temporary
file at worst, which readers never look at); readers see the old content or the new,
never half of it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then put it in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_parquet(frame, path: Path) -> Path:
    """A pandas DataFrame or a pyarrow Table as one parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(frame, pa.Table):
        return write_atomic(path, lambda tmp: pq.write_table(frame, tmp))
    return write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def replace_folder(folder: Path, fill: Callable[[Path], T]) -> T:
    """Call ``fill(staging)`` to build a new folder beside ``folder``, then swap it in; the old
    folder goes only once the new one is complete. Returns what ``fill`` returned."""
    folder = Path(folder).resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = folder.with_name(f".{folder.name}.new-{token}")
    retired = folder.with_name(f".{folder.name}.old-{token}")
    try:
        staging.mkdir()
        result = fill(staging)
        if folder.exists():
            os.replace(folder, retired)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)
    return result
