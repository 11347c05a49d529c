"""`mrisynth data download figshare --out DIR`: fetch Cheng et al.'s brain tumour data set (CC BY 4.0).

DOI 10.6084/m9.figshare.1512427: four zip parts of MATLAB v7.3 files (`1.mat` .. `3064.mat`) and `cvind.mat`
(patient-wise folds). Each file is downloaded to `DIR/downloads/<name>.part`, resumed with an HTTP Range
request after an interruption, checked (size when known, zip/HDF5 structure always), renamed, and its sha256
recorded in `DIR/downloads/download.json`. The zips are then extracted into `DIR/mat/` after every member
name has been checked (no absolute names, no `..`, no links), and `mrisynth data prepare DIR/mat` works on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from mrisynth.errors import UserError
from mrisynth.files import (
    atomic_path,
    claim_output_dir,
    ensure_writable_dir,
    read_json,
    sha256_file,
    write_json,
)

log = logging.getLogger(__name__)

FIGSHARE_BASE_URL = "https://figshare.com/ndownloader/files"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TIMEOUT_S = 60
_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a public data set. `size`/`sha256` None when not known in advance (then recorded)."""

    name: str
    figshare_id: int
    size: int | None = None
    sha256: str | None = None


# The files of figshare article 1512427 (version 5). The file ids are those public scripts use for this
# article; the sizes and checksums were not available offline when this table was written, so arrivals are
# checked by structure (a readable zip, an HDF5 file) and their sha256 is recorded for later runs.
FIGSHARE_FILES = (
    RemoteFile("brainTumorDataPublic_1-766.zip", 3381290),
    RemoteFile("brainTumorDataPublic_767-1532.zip", 3381293),
    RemoteFile("brainTumorDataPublic_1533-2298.zip", 3381296),
    RemoteFile("brainTumorDataPublic_2299-3064.zip", 3381302),
    RemoteFile("cvind.mat", 3381299),
)


def file_url(remote: RemoteFile, base_url: str | None) -> str:
    """Figshare's download URL, or `<base_url>/<name>` for a mirror."""
    if base_url:
        return f"{base_url.rstrip('/')}/{remote.name}"
    return f"{FIGSHARE_BASE_URL}/{remote.figshare_id}"


def run_download_figshare(
    out_dir: str | os.PathLike, *, base_url: str | None = None, files: tuple[RemoteFile, ...] = FIGSHARE_FILES,
) -> Path:
    """Download (resuming), verify and extract the Figshare data set; returns the folder of .mat files.

    `out_dir` must be new, empty or an earlier download folder: its `mat/` is replaced, never a user's own.
    """
    with claim_output_dir(out_dir, "download") as out:
        return _download_into(out, base_url=base_url, files=files)


def _download_into(out_dir: Path, *, base_url: str | None, files: tuple[RemoteFile, ...]) -> Path:
    downloads = ensure_writable_dir(out_dir / "downloads")
    record_path = downloads / "download.json"
    record = read_json(record_path) if record_path.is_file() else {}
    for remote in files:
        path = download_file(file_url(remote, base_url), downloads / remote.name, size=remote.size,
                             sha256=remote.sha256 or record.get(remote.name, {}).get("sha256"))
        check_structure(path)
        record[remote.name] = {"size": path.stat().st_size, "sha256": sha256_file(path),
                               "url": file_url(remote, base_url)}
        write_json(record_path, record)
    mat_dir = out_dir / "mat"
    with atomic_path(mat_dir, suffix="") as tmp:
        tmp.mkdir()
        for remote in files:
            src = downloads / remote.name
            if src.suffix == ".zip":
                safe_extract(src, tmp)
            else:
                shutil.copy2(src, tmp / remote.name)
    log.info("figshare data set ready in %s", mat_dir)
    return mat_dir


def download_file(url: str, dest: Path, *, size: int | None = None, sha256: str | None = None) -> Path:
    """Fetch `url` to `dest`, resuming `dest.part` with a Range request; skip when `dest` is already complete."""
    if dest.is_file() and _matches(dest, size, sha256):
        log.info("%s already downloaded", dest.name)
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "mrisynth"})
    except ValueError as exc:
        raise UserError(f"'{url}' is not a download URL; --base-url must start with http:// or https://") from exc
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with contextlib.closing(urllib.request.urlopen(request, timeout=_TIMEOUT_S)) as response:
            if have and response.status != 206:
                have = 0  # the server ignored the Range: start again
            total = response.headers.get("Content-Length")
            total = int(total) + have if total is not None else size
            with open(part, "ab" if have else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, leave=False
            ) as bar:
                while block := response.read(_BLOCK):
                    f.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part file is already whole
            pass
        else:
            raise UserError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}; check the URL "
                            "(--base-url) and run the same command again") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot download {url} ({reason}): check the internet connection or give a mirror "
                        "with --base-url; run the same command again to resume") from exc
    got = part.stat().st_size
    if size is not None and got > size:
        part.unlink()  # not the file we expect: resuming it could never succeed
        raise UserError(f"{dest.name}: got {got} bytes, expected {size} (removed); check --base-url")
    if size is not None and got < size:
        raise UserError(f"{dest.name}: got {got} of {size} bytes; run the same command again to resume")
    if sha256 is not None and sha256_file(part) != sha256:
        part.unlink()
        raise UserError(f"{dest.name}: checksum mismatch (file removed); run the same command again")
    os.replace(part, dest)
    return dest


def _matches(path: Path, size: int | None, sha256: str | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or sha256_file(path) == sha256


def check_structure(path: Path) -> None:
    """A .zip must be a readable zip; a .mat must be HDF5 (MATLAB v7.3). Bad files are removed."""
    ok = zipfile.is_zipfile(path) if path.suffix == ".zip" else _is_hdf5(path)
    if not ok:
        path.unlink()
        raise UserError(f"{path.name} arrived but is not a valid {path.suffix} file (removed); the server may "
                        "have sent an error page: check --base-url and run the same command again")


def _is_hdf5(path: Path) -> bool:
    # HDF5 puts its signature at offset 0, 512, 1024, ...; MATLAB v7.3 files use 512 (after a text header).
    with open(path, "rb") as f:
        head = f.read(4096)
    return any(head[o:o + 8] == _HDF5_SIGNATURE for o in range(0, len(head), 512))


def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip into `dest` after checking every member; refuses traversal, absolute names and links."""
    dest = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _check_member(info, archive)
        out = []
        for info in members:
            target = dest / PurePosixPath(info.filename.replace("\\", "/"))
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, _BLOCK)
            out.append(target)
    return out


def _check_member(info: zipfile.ZipInfo, archive: Path) -> None:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts or not parts:
        raise UserError(f"{archive.name} holds an unsafe path '{info.filename}'; refusing to extract it")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UserError(f"{archive.name} holds a symbolic link '{info.filename}'; refusing to extract it")
