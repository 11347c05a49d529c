"""Small file helpers: atomic writes, JSON/JSONL, hashing.

Everything a step writes goes to a temporary name first and is renamed when complete, so a crash never
leaves a half-written file that a later step would trust.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mrisynth.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories (whatever the block creates at the temporary path).
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the block decides whether it is a file or a directory
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            # A folder cannot be replaced in one rename: move the old one aside first, delete it after.
            old = tmp.with_name(tmp.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        error = storage_error(exc, path)
        if error is None:
            raise
        raise error from exc
    except BaseException:
        _remove(tmp)
        raise


_STORAGE_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def storage_error(exc: OSError, path: str | os.PathLike | None = None) -> UserError | None:
    """A one-line UserError for write failures a user can fix (disk full, read-only, permissions), else None."""
    reason = _STORAGE_ERRORS.get(exc.errno)
    if reason is None:
        return None
    where = path or exc.filename or "the output folder"
    return UserError(f"cannot write {where}: {reason}; free space or choose a writable --out, then rerun "
                     "the same command (finished steps are kept)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and fail with a clear message if it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {path}: {exc.strerror}; choose a writable --out") from exc
    if not os.access(path, os.W_OK):
        raise UserError(f"output directory {path} is not writable; choose a writable --out")
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (sorted keys, indented: these files are read by people too)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a clear error if it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"{path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); delete it and rerun") from exc


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON record as a line (flushed and fsynced so a crash loses at most the line being written).

    A torn last line left by a crash is closed off first, so it stays one unreadable line that `read_jsonl`
    skips instead of swallowing the record appended after it.
    """
    path = Path(path)
    torn = path.is_file() and path.stat().st_size > 0 and _last_byte(path) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(record, sort_keys=True, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; unreadable lines (a line torn by a crash while appending) are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> Path:
    """Rewrite a JSONL file atomically (e.g. to drop records past a resumed checkpoint)."""
    lines = "".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in records)
    return write_text(path, lines)


def write_csv(path: str | os.PathLike, rows: list[dict], *, columns: list[str] | None = None) -> Path:
    """Rows of dicts as CSV, atomically. Columns as given (other keys dropped), else every key any row has,
    in first-seen order (so a column missing from the first row is not lost)."""
    fields = columns if columns is not None else list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_array(arr: np.ndarray) -> str:
    """Hex SHA-256 of an array's shape and bytes (row order included), e.g. to key a cache on pixel content."""
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def sha256_dir(path: str | os.PathLike, *, pattern: str = "*") -> str:
    """One SHA-256 over the names and bytes of the files under `path` (sorted), e.g. a saved model."""
    h = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob(pattern) if p.is_file()):
        h.update(str(file.relative_to(root)).encode())
        h.update(sha256_file(file).encode())
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
