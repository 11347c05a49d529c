"""The CLI's contract: usage mistakes and bad input are one line with exit code 2; piping into head is fine."""

import sys

import pytest

from mrisynth.cli import main


def _errors(text: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").splitlines() if line.strip()]


@pytest.mark.parametrize("argv", [
    ["data", "prepare", "somewhere"],  # missing --out
    ["data", "cache", "somewhere", "--size", "abc"],
    ["classifier", "train", "--data", "d", "--out", "o", "--preset", "tinyy"],
    ["no-such-command"],
])
def test_usage_mistakes_are_one_line_with_exit_code_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = _errors(capsys.readouterr().err)
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("mrisynth: error:")


def test_a_real_data_folder_is_refused_as_a_synthetic_set(tiny_manifest_dir, tmp_path, capsys):
    code = main(["classifier", "train", "--data", str(tiny_manifest_dir), "--synthetic", str(tiny_manifest_dir),
                 "--preset", "tiny", "--out", str(tmp_path / "clf")])
    err = [line for line in _errors(capsys.readouterr().err) if line.startswith("mrisynth:")]
    assert code == 2 and len(err) == 1 and "is not synthetic data" in err[0]


def test_output_into_a_closed_pipe_is_not_a_traceback(tiny_manifest_dir, monkeypatch):
    """`mrisynth ... | head -1`: once head exits, writes raise BrokenPipeError; the command just stops."""

    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["data", "audit", str(tiny_manifest_dir)]) == 0


def test_a_refused_command_leaves_no_output_folder(tiny_manifest_dir, tmp_path):
    out = tmp_path / "gen"
    code = main(["generator", "train", "--backend", "ddpm", "--preset", "tiny", "--data", str(tmp_path / "nodata"),
                 "--out", str(out)])
    assert code == 2 and not out.exists()
    code = main(["generator", "train", "--backend", "ddpm", "--preset", "tiny", "--data", str(tiny_manifest_dir),
                 "--out", str(out), "--set", "steps=-1"])
    assert code == 2 and not out.exists()
