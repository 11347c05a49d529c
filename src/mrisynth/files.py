"""Small file helpers: atomic writes, JSON/JSONL, hashing, and claiming output folders.

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
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from mrisynth.errors import UserError

log = logging.getLogger(__name__)


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
    errno.EFBIG: "the file size limit is exceeded",
    errno.EROFS: "the file system is read-only",
}
_PERMISSION_ERRORS = (errno.EACCES, errno.EPERM)


def storage_error(exc: OSError, path: str | os.PathLike | None = None) -> UserError | None:
    """A one-line UserError for failures a user can fix (disk full, read-only, permissions), else None.

    A permission error may come from reading as well as writing, so it names the file and asks for its
    permissions rather than blaming the output folder.
    """
    where = path or exc.filename or "the output folder"
    if exc.errno in _PERMISSION_ERRORS:
        return UserError(f"permission denied on {where}; check its permissions (ls -l) or use files and "
                         "folders you can read and write")
    reason = _STORAGE_ERRORS.get(exc.errno)
    if reason is None:
        return None
    return UserError(f"cannot write {where}: {reason}; free space or choose a writable --out, then rerun "
                     "the same command (finished steps are kept)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def ensure_writable_dir(path: str | os.PathLike, *, fix: str = "choose a writable --out") -> Path:
    """Create `path` if needed and fail with a clear message (ending in `fix`) if it cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder; {fix}")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing != path and not os.access(existing, os.W_OK):  # refuse before making any folder
        raise UserError(f"folder {existing} is not writable; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create folder {path}: {exc.strerror}; {fix}") from exc
    if not os.access(path, os.W_OK):
        raise UserError(f"folder {path} is not writable; {fix}")
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


# ----------------------------------------------------------------------------------------------- output folders

MARKER_NAME = ".mrisynth-output.json"  # {"kind": ...}: what wrote this folder
LOCK_NAME = ".mrisynth-output.lock"  # held by the one process writing the folder
OUTPUT_KINDS = ("prepared-data", "phantom", "download", "generator", "synthetic", "classifier", "study",
                "leakage-audit", "quality")
# Folders written before markers existed, recognised by the files each kind always wrote (all must exist), so
# that they can be resumed and named in refusals. A kind's writer may pass a stricter `legacy` check.
LEGACY_SIGNS: dict[str, tuple[str, ...]] = {
    "prepared-data": ("prepare.json",),
    "phantom": ("metadata.csv", "config.yaml", "images", "masks"),
    "download": ("downloads",),
    "generator": ("generator.json",),
    "synthetic": (".provenance.jsonl",),
    "classifier": ("config.yaml", "metrics.jsonl"),
    "study": ("config.yaml", "trials"),
    "leakage-audit": ("leakage.json",),
    "quality": ("quality.json",),
}
_OWN_FILES = (MARKER_NAME, LOCK_NAME)
_held: dict[Path, tuple[str, int]] = {}  # folders this process has claimed: kind, nesting depth
_held_guard = threading.Lock()


def output_kind(path: str | os.PathLike) -> str | None:
    """The kind of mrisynth output a folder holds: its marker's, else a recognised earlier layout, else None."""
    path = Path(path)
    marker = path / MARKER_NAME
    if marker.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            kind = json.loads(marker.read_text(encoding="utf-8")).get("kind")
            if isinstance(kind, str):
                return kind
    return next((k for k, names in LEGACY_SIGNS.items() if _has_all(path, names)), None)


def _has_all(path: Path, names: tuple[str, ...]) -> bool:
    return path.is_dir() and all((path / n).exists() for n in names)


@contextlib.contextmanager
def claim_output_dir(
    path: str | os.PathLike, kind: str, *, legacy: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Make `path` this process's output folder of `kind` for the block; yields it as a Path.

    Refused with a one-line UserError (before anything is written) when `path` is a file, holds another kind of
    output, is a non-empty folder mrisynth did not write, or is being written by another process (a lock is held
    for the block). A folder without a marker but recognised as earlier output of this kind (`legacy(path)`, by
    default `LEGACY_SIGNS[kind]`) is adopted, so runs of the previous version resume. A folder this call created
    is removed again if the block fails before writing anything into it.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; add it to OUTPUT_KINDS")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder; choose a new or empty folder for the {kind} output")
    key = path.resolve()
    if _nest(key, kind, path):  # claimed again by this process (a command calling another step)
        try:
            yield path
        finally:
            with _held_guard:
                _held[key] = (kind, _held[key][1] - 1)
        return
    created = not path.exists()
    _check_claimable(path, kind, legacy)
    ensure_writable_dir(path)
    lock = FileLock(str(path / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{path} is being written by another mrisynth process; wait for it to finish or choose "
                        "another folder") from None
    try:
        _check_claimable(path, kind, legacy)  # again under the lock: another process may have claimed it meanwhile
        if not (path / MARKER_NAME).is_file():
            write_json(path / MARKER_NAME, {"kind": kind})  # no time stamp: reruns stay byte-identical
        with _held_guard:
            _held[key] = (kind, 1)
        try:
            yield path
        except BaseException:
            if created and all(p.name in _OWN_FILES for p in path.iterdir()):
                _remove(path / MARKER_NAME)
                lock.release()
                shutil.rmtree(path, ignore_errors=True)
            raise
        finally:
            with _held_guard:
                _held.pop(key, None)
    finally:
        lock.release()


def _nest(key: Path, kind: str, path: Path) -> bool:
    """True (and one level deeper) when this process already holds `key` for `kind`."""
    with _held_guard:
        held = _held.get(key)
        if held is None:
            return False
        if held[0] != kind:
            raise UserError(f"{path} is already being written as {held[0]} output; choose another folder "
                            f"for the {kind} output")
        _held[key] = (kind, held[1] + 1)
        return True


def _check_claimable(path: Path, kind: str, legacy: Callable[[Path], bool] | None) -> None:
    """A UserError when `path` holds something other than (earlier) output of `kind`."""
    if not path.is_dir():
        return
    entries = [p for p in path.iterdir() if p.name not in _OWN_FILES]
    found = output_kind(path)
    if (path / MARKER_NAME).is_file():
        if found != kind:
            raise UserError(f"{path} holds {found or 'unknown (damaged marker)'} output, not {kind}; choose another "
                            f"folder for the {kind} output (nothing was changed)")
        return
    if not entries:
        return
    if legacy(path) if legacy is not None else found == kind:
        log.info("adopting %s: %s output written by an earlier mrisynth", path, kind)
        return
    what = f"{found} output" if found else f"files mrisynth did not write (e.g. {sorted(p.name for p in entries)[0]})"
    raise UserError(f"{path} is not a {kind} folder: it holds {what}; choose a new or empty folder for the "
                    f"{kind} output (nothing was changed)")


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
