"""Download: from a local HTTP server (Range support, an interrupted transfer, a malicious zip), then prepare."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from mrisynth.data.download import RemoteFile, download_file, run_download_figshare, safe_extract
from mrisynth.data.prepare import PrepareConfig, run_prepare
from mrisynth.errors import UserError
from test_data_sources import make_mat_dir


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `files` (name -> bytes) with Range support; names in `cut_once` are cut short on first request."""

    files: dict[str, bytes] = {}
    cut_once: set[str] = set()
    ranges_seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        name = self.path.rsplit("/", 1)[-1]
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if "Range" in self.headers:
            self.ranges_seen.append(self.headers["Range"])
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if name in self.cut_once:
            self.cut_once.discard(name)
            self.wfile.write(body[start:start + len(body) // 2])  # then drop the connection mid-body
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.files, _Handler.cut_once, _Handler.ranges_seen = {}, set(), []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def _zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _mat_archives(tmp_path: Path) -> tuple[dict[str, bytes], tuple[RemoteFile, ...]]:
    src = make_mat_dir(tmp_path / "matsrc", n=6, size=(16, 16))
    part1 = _zip_of({f"{i}.mat": (src / f"{i}.mat").read_bytes() for i in (1, 2, 3)})
    part2 = _zip_of({f"{i}.mat": (src / f"{i}.mat").read_bytes() for i in (4, 5, 6)})
    served = {"p1.zip": part1, "p2.zip": part2, "cvind.mat": (src / "cvind.mat").read_bytes()}
    table = (RemoteFile("p1.zip", 1, size=len(part1)), RemoteFile("p2.zip", 2), RemoteFile("cvind.mat", 3))
    return served, table


def test_download_resumes_verifies_extracts_and_prepares(server, tmp_path):
    url, handler = server
    handler.files, table = _mat_archives(tmp_path)
    handler.cut_once = {"p1.zip"}
    out = tmp_path / "fs"
    with pytest.raises(UserError, match="run the same command again"):
        run_download_figshare(out, base_url=url, files=table)
    part = out / "downloads/p1.zip.part"
    assert 0 < part.stat().st_size < len(handler.files["p1.zip"])
    mat_dir = run_download_figshare(out, base_url=url, files=table)
    assert handler.ranges_seen == [f"bytes={len(handler.files['p1.zip']) // 2}-"]
    assert (out / "downloads/p1.zip").read_bytes() == handler.files["p1.zip"] and not part.exists()
    assert sorted(p.name for p in mat_dir.glob("*.mat")) == sorted(["cvind.mat"] + [f"{i}.mat" for i in range(1, 7)])
    data = run_prepare(mat_dir, tmp_path / "data", PrepareConfig(split="folds"))
    assert len((data / "manifest.csv").read_text().splitlines()) == 7
    # A second run finds everything in place and downloads nothing.
    handler.files = {}
    assert run_download_figshare(out, base_url=url, files=table) == mat_dir


def test_wrong_size_and_error_pages_are_refused(server, tmp_path):
    url, handler = server
    handler.files = {"a.zip": _zip_of({"1.mat": b"x"}), "cvind.mat": b"<html>not found</html>"}
    with pytest.raises(UserError, match=r"expected 5 \(removed\)"):
        run_download_figshare(tmp_path / "o1", base_url=url, files=(RemoteFile("a.zip", 1, size=5),))
    with pytest.raises(UserError, match="not a valid .mat"):
        run_download_figshare(tmp_path / "o2", base_url=url, files=(RemoteFile("cvind.mat", 1),))
    with pytest.raises(UserError, match="HTTP 404"):
        download_file(f"{url}/missing.zip", tmp_path / "missing.zip")


@pytest.mark.parametrize("name", ["../evil.mat", "/abs/evil.mat", "a/../../evil.mat", "C:/evil.mat"])
def test_path_traversal_is_refused_before_anything_is_written(tmp_path, name):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip_of({"ok.mat": b"fine", name: b"evil"}))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UserError, match="unsafe path"):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil.mat").exists()


def test_symlink_members_are_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        info = zipfile.ZipInfo("link.mat")
        info.external_attr = (0o120777 << 16)  # a symbolic link, as `zip --symlinks` stores it
        zf.writestr(info, "/etc/passwd")
    archive = tmp_path / "link.zip"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(UserError, match="symbolic link"):
        safe_extract(archive, tmp_path)


def test_unreachable_host_is_a_one_line_error(tmp_path):
    # Port 9 on localhost: nothing listens, the connection is refused at once (no network needed).
    with pytest.raises(UserError, match="cannot download .*--base-url"):
        run_download_figshare(tmp_path / "o", base_url="http://127.0.0.1:9", files=(RemoteFile("x.zip", 1),))
