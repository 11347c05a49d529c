"""claim_output_dir: every output folder says what wrote it; other kinds, foreign folders and a second process
are refused before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mrisynth.errors import UserError
from mrisynth.files import MARKER_NAME, claim_output_dir, output_kind


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_new_folder_gets_a_marker_naming_its_kind(tmp_path):
    with claim_output_dir(tmp_path / "out", "phantom") as out:
        (out / "a.txt").write_text("x")
    assert json.loads((tmp_path / "out" / MARKER_NAME).read_text())["kind"] == "phantom"
    assert output_kind(tmp_path / "out") == "phantom"
    with claim_output_dir(tmp_path / "out", "phantom"):  # the same kind again: a rerun or resume
        pass


def test_another_kind_is_refused_and_nothing_changes(tmp_path):
    with claim_output_dir(tmp_path / "d", "prepared-data") as out:
        (out / "manifest.csv").write_text("id\n")
    before = _tree(tmp_path / "d")
    with pytest.raises(UserError, match=r"holds prepared-data output, not synthetic"):
        with claim_output_dir(tmp_path / "d", "synthetic"):
            raise AssertionError("the block must not run")
    assert _tree(tmp_path / "d") == before


def test_a_user_folder_is_refused_naming_a_file_in_it(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "metadata.csv").write_text("my notes")
    with pytest.raises(UserError, match=r"is not a phantom folder: it holds files mrisynth did not write \(e.g. metadata.csv\)"):
        with claim_output_dir(tmp_path / "mine", "phantom"):
            pass
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["metadata.csv"]


def test_an_earlier_unmarked_output_of_the_same_kind_is_adopted(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.csv").write_text("id\n")
    (old / "prepare.json").write_text("{}")
    assert output_kind(old) == "prepared-data"
    with pytest.raises(UserError, match="holds prepared-data output"):
        with claim_output_dir(old, "synthetic"):
            pass
    with claim_output_dir(old, "prepared-data"):
        pass
    assert json.loads((old / MARKER_NAME).read_text())["kind"] == "prepared-data"


def test_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        with claim_output_dir(tmp_path / "f", "classifier"):
            pass


def test_a_failed_block_leaves_no_folder_it_created(tmp_path):
    with pytest.raises(UserError):
        with claim_output_dir(tmp_path / "new", "study"):
            raise UserError("bad input")
    assert not (tmp_path / "new").exists()


def test_a_second_process_is_refused_while_the_folder_is_held(tmp_path):
    code = ("import sys\nfrom mrisynth.errors import UserError\nfrom mrisynth.files import claim_output_dir\n"
            "try:\n    with claim_output_dir(sys.argv[1], 'classifier'): pass\n"
            "except UserError as e:\n    print(e); sys.exit(2)\n")
    with claim_output_dir(tmp_path / "run", "classifier"):
        busy = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
    assert busy.returncode == 2
    assert "being written by another mrisynth process" in busy.stdout
    free = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
    assert free.returncode == 0, free.stdout + free.stderr
