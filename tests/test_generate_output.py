import numpy as np
import pytest
from PIL import Image

from mrisynth.data.manifest import load_manifest
from mrisynth.errors import UserError
from mrisynth.generate.output import SyntheticWriter, synthetic_id


def _add(writer: SyntheticWriter, i: int) -> None:
    writer.add(np.full((8, 8), i, np.uint8), image_id=synthetic_id("b", i), class_name="b", seed=i, steps=2,
               guidance=1.5)


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
