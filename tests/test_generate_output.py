import dataclasses

import numpy as np
import pytest
from PIL import Image

from mrisynth.data.manifest import load_manifest
from mrisynth.errors import UserError
from mrisynth.files import append_jsonl, read_jsonl
from mrisynth.generate.output import SyntheticWriter, synthetic_id
from mrisynth.generate.resume import drop_records_after
from mrisynth.runfolder import check_same_run, start_run


def _add(writer: SyntheticWriter, i: int) -> None:
    writer.add(np.full((8, 8), i, np.uint8), image_id=synthetic_id("b", i), class_name="b", seed=i, steps=2,
               guidance=1.5)
    writer.flush()  # recorded now, as after a finished batch


def test_writer_resumes_and_writes_a_manifest_of_one_channel_pngs(tmp_path):
    writer = SyntheticWriter(tmp_path, ["a", "b"], generator_sha256="abc")
    _add(writer, 0)
    again = SyntheticWriter(tmp_path, ["a", "b"], generator_sha256="abc")  # a restarted sampler
    assert again.existing_ids() == {"syn-b-000000"}
    _add(again, 1)
    again.finish()
    rows = load_manifest(tmp_path)
    assert [r.id for r in rows] == ["syn-b-000000", "syn-b-000001"]
    assert {r.source for r in rows} == {"synthetic"} and rows[1].label == 1 and rows[1].guidance == 1.5
    assert Image.open(rows[0].path).mode == "L"


def test_writer_refuses_to_mix_generators(tmp_path):
    _add(SyntheticWriter(tmp_path, ["a", "b"], generator_sha256="abc"), 0)
    with pytest.raises(UserError, match="another generator"):
        SyntheticWriter(tmp_path, ["a", "b"], generator_sha256="def")


def test_a_torn_provenance_line_does_not_hide_later_images(tmp_path):
    writer = SyntheticWriter(tmp_path, ["a", "b"], generator_sha256="abc")
    _add(writer, 0)
    with open(tmp_path / ".provenance.jsonl", "a") as f:
        f.write('{"id": "syn-b-000001", "pa')  # the sampler was killed while recording image 1
    again = SyntheticWriter(tmp_path, ["a", "b"], generator_sha256="abc")
    _add(again, 1)
    _add(again, 2)
    assert SyntheticWriter(tmp_path, ["a", "b"], generator_sha256="abc").existing_ids() == {
        "syn-b-000000", "syn-b-000001", "syn-b-000002"}


@dataclasses.dataclass
class _Settings:
    steps: int = 2
    guidance: float = 1.5
    batch_size: int = 4
    classes: list[str] = dataclasses.field(default_factory=lambda: ["a", "b"])


def test_a_rerun_must_use_the_settings_of_the_run_its_folder_holds(tmp_path):
    assert check_same_run(tmp_path, _Settings(), resumable=("batch_size",)) == []  # a fresh folder
    start_run(tmp_path, _Settings())
    assert check_same_run(tmp_path, _Settings()) == []
    assert check_same_run(tmp_path, _Settings(batch_size=1), resumable=("batch_size",)) == ["batch_size"]
    with pytest.raises(UserError, match=r"steps: 2 then, 3 now"):
        check_same_run(tmp_path, _Settings(steps=3), resumable=("batch_size",))
    with pytest.raises(UserError, match="classes"):
        start_run(tmp_path, _Settings(classes=["a"]), resumable=("batch_size",))
    start_run(tmp_path, _Settings(batch_size=1), resumable=("batch_size",))  # config.yaml records the new value
    assert "batch_size: 1" in (tmp_path / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text("steps: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        check_same_run(tmp_path, _Settings())


def test_drop_records_after_keeps_earlier_steps_and_skips_a_torn_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        append_jsonl(metrics, {"step": step, "loss": 1.0 / step})
    with open(metrics, "a") as f:
        f.write('{"step": 4, "lo')  # killed while logging step 4
    drop_records_after(metrics, 2)
    assert [r["step"] for r in read_jsonl(metrics)] == [1, 2]
    assert metrics.read_text().endswith("\n")
    drop_records_after(tmp_path / "absent.jsonl", 2)  # nothing logged yet: nothing to do
    assert not (tmp_path / "absent.jsonl").exists()


def test_temporary_files_of_a_killed_sampler_are_removed_on_resume(tmp_path):
    _add(SyntheticWriter(tmp_path, ["a", "b"], generator_sha256="abc"), 0)
    stale = tmp_path / "b" / ".syn-b-000001.x1y2.tmp.png"
    stale.write_bytes(b"half a png")
    SyntheticWriter(tmp_path, ["a", "b"], generator_sha256="abc")
    assert not stale.exists() and (tmp_path / "b" / "syn-b-000000.png").exists()


def test_asking_for_fewer_images_gives_a_manifest_of_that_size(tmp_path):
    writer = SyntheticWriter(tmp_path, ["a", "b"], generator_sha256="abc")
    for i in range(3):
        _add(writer, i)
    writer.finish(keep={synthetic_id("b", 0)})
    assert [r.id for r in load_manifest(tmp_path)] == ["syn-b-000000"]
