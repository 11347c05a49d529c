"""The opt-in real-data tests find the Figshare copy wherever the repository is cloned."""

from __future__ import annotations

import subprocess

from realdata import find_figshare


def _figshare(folder):
    folder.mkdir(parents=True)
    (folder / "patients.csv").write_text("id,patient_id,label_code,class,fold\n")
    return folder


def test_found_beside_a_clone_anywhere_above_it(tmp_path):
    data = _figshare(tmp_path / "shared" / "data" / "figshare")
    clone = tmp_path / "projects" / "mrisynth"
    clone.mkdir(parents=True)
    assert find_figshare(clone, environ={}) == (data, "")


def test_found_inside_the_checkout_and_from_a_git_worktree(tmp_path):
    main = tmp_path / "main"
    data = _figshare(main / "shared" / "data" / "figshare")
    subprocess.run(["git", "init", "-q", str(main)], check=True)
    subprocess.run(["git", "-C", str(main), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    worktree = tmp_path / "elsewhere" / "wt"
    subprocess.run(["git", "-C", str(main), "worktree", "add", "-q", str(worktree)], check=True)
    assert find_figshare(main, environ={})[0] == data
    assert find_figshare(worktree, environ={})[0] == data  # the worktree itself has no shared/ near it


def test_the_environment_wins_and_a_wrong_one_or_none_says_where_to_point(tmp_path):
    _figshare(tmp_path / "shared" / "data" / "figshare")
    chosen = _figshare(tmp_path / "mine")
    assert find_figshare(tmp_path, environ={"MRISYNTH_FIGSHARE": str(chosen)}) == (chosen, "")
    path, why = find_figshare(tmp_path, environ={"MRISYNTH_FIGSHARE": str(tmp_path / "nope")})
    assert path is None and "nope holds no patients.csv" in why


def test_not_found_says_how_to_point_at_the_data(tmp_path):
    path, why = find_figshare(tmp_path, environ={})
    assert path is None
    assert "set MRISYNTH_FIGSHARE=" in why and f"shared/data/figshare beside or above {tmp_path}" in why
