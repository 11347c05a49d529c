"""The report: files exist, the HTML is self-contained and parses, the Markdown and CSV hold every trial."""

from __future__ import annotations

import base64
import csv
from html.parser import HTMLParser

import pytest

from mrisynth.files import read_json
from mrisynth.report import run_report
from mrisynth.report.markdown import VERDICT_HEADER, text_table, verdict_rows
from mrisynth.study import run_study
from test_study_runner import install_fakes, small_config


@pytest.fixture
def fakes(monkeypatch):
    return install_fakes(monkeypatch)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("script", "link") or (tag == "a" and "href" in attrs):
            self.links.append(tag)
        self.tables += tag == "table"


def test_report_files_figures_and_tables(tiny_manifest_dir, tmp_path, fakes):
    run = tmp_path / "run"
    run_study(small_config(tiny_manifest_dir), run)
    out = run_report(run)
    page = (out / "index.html").read_text()
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert parser.links == []  # nothing to fetch: opens offline
    assert len(parser.images) >= 4 and all(s.startswith("data:image/png;base64,") for s in parser.images)
    for src in parser.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert parser.tables == 1  # the verdicts (no audit or leakage tables in this run)
    assert len(list((out / "figures").glob("*.png"))) == len(parser.images)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {"test_accuracy", "test_accuracy_lo", "val_accuracy"} <= set(rows[0])
    md = (out / "report.md").read_text()
    assert "## Verdicts" in md and "r0.5" in md and "figures/" in md
    summary = read_json(out / "summary.json")
    assert summary["n_trials_done"] == summary["n_trials_total"] == 8
    # The fake gets more right with more synthetic images: r2 is best on validation (83.33% vs 66.67% for r1).
    assert summary["best"]["condition"] == "r2" and summary["best"]["diff_vs_real_only"] == pytest.approx(5 / 9)
    verdicts = {r[0]: r[-1] for r in verdict_rows(summary)}
    # 2 runs, 3 test patients: nothing is detectable, and each row says how large a difference would have been
    assert verdicts["r0"] == "baseline"
    mdd = {c["name"]: c["comparison"].get("mdd") for c in summary["conditions"] if c.get("comparison")}
    assert mdd["r0.5"] > 1.0 and mdd["r1"] > 1.0  # more than 100 points: this study could not tell
    for name in ("r0.5", "r1"):
        assert verdicts[name] == (f"no detectable difference (could detect no possible difference: "
                                  f"±{100 * mdd[name]:.0f} pts needed; add runs or test patients)")
    assert verdicts["r2"].startswith("not testable: every run and every test patient moved by the same amount")
    for word in (verdicts["r1"], "not testable", "only 3 patients"):
        assert word in page and word in md
    assert "The best ratio is chosen on validation accuracy; the test set is reported, never used to choose." \
        in summary["caveats"]


def test_report_merges_whatever_is_done(tiny_manifest_dir, tmp_path, fakes):
    run = tmp_path / "run"
    run_study(small_config(tiny_manifest_dir), run, shard=(0, 2))  # half the trials
    out = run_report(run)
    summary = read_json(out / "summary.json")
    assert summary["n_trials_done"] == 4 and summary["n_trials_total"] == 8
    table = text_table(VERDICT_HEADER, verdict_rows(summary))
    assert table.splitlines()[0].startswith("condition") and len(table.splitlines()) == 2 + 4


def test_audit_headline_reads_quality_json(tiny_manifest_dir, tmp_path, fakes):
    from mrisynth.files import write_json

    run = tmp_path / "run"
    run_study(small_config(tiny_manifest_dir, seeds=[0], ratios=[0, 1]), run)
    m = {"fd": 12.5, "kid": 0.01, "precision": 0.7, "recall": 0.6}
    write_json(run / "quality" / "quality.json", {
        "feature_spaces": {"stats": {"overall": m, "real_vs_real": {
            "overall": {"fd": 3.0, "kid": 0.001, "precision": 0.9, "recall": 0.9},
            "synthetic_vs_half": {"overall": {"fd": 14.0, "kid": 0.02}}}}},
        "diversity": {"per_class": {"glioma": {"synthetic": {"msssim": 0.4}, "real": {"msssim": 0.3}}}},
        "memorisation": {"pixel": {"threshold": 0.95, "share_above": 0.02, "heldout_in_train": {"share_above": 0.0}},
                         "patients_reproduced": [{"patient_id": "gl0"}]},
    })
    rows = read_json(run_report(run) / "summary.json")["audit"]
    by_name = {r[0].split(" ")[0] + r[0].split(" ")[1]: r[1:] for r in rows}
    assert by_name["stats:FD"] == [14.0, 3.0]  # synthetic vs real half at equal n, against real vs real
    assert by_name["stats:precision"] == [0.7, 0.9]
    assert ["training patients reproduced by some synthetic image", 1, None] in rows
    assert "Synthetic-image audit" in (run / "report" / "index.html").read_text()


def test_leakage_caveat_when_patients_cross_splits(tiny_manifest_dir, tmp_path, fakes):
    from mrisynth.data.manifest import load_manifest, save_manifest

    records = load_manifest(tiny_manifest_dir)
    for r in records:  # one test slice per class moved to a training patient: an image-level split's leak
        if r.split == "test" and r.id.endswith("-3-0"):
            r.patient_id = r.patient_id[:-1] + "0"
    save_manifest(records, tiny_manifest_dir / "manifest.csv")
    run = tmp_path / "run"
    run_study(small_config(tiny_manifest_dir, seeds=[0], ratios=[0, 1]), run, report=run_report)
    summary = read_json(run / "report" / "summary.json")
    assert any("3 of 6 test patients" in c for c in summary["caveats"])


def test_generator_validation_curves_appear_when_logged(tiny_manifest_dir, tmp_path, fakes):
    from mrisynth.files import append_jsonl
    from mrisynth.report import plots

    run = tmp_path / "run"
    run_study(small_config(tiny_manifest_dir, seeds=[0], ratios=[0, 1]), run)
    caption = "Generator validation: val_* metrics against training step"
    assert caption not in (run_report(run) / "report.md").read_text()  # no val_* records: no figure
    log = run / "generator" / "metrics.jsonl"
    append_jsonl(log, {"step": 10, "loss": 0.9})  # a loss line: not a validation point
    append_jsonl(log, {"step": 100, "val_fd": 40.0, "val_tstr_acc": 0.5})
    append_jsonl(log, {"step": 200, "val_fd": 25.0, "val_tstr_acc": 0.75, "val_note": "text is skipped"})
    assert plots.read_generator_validation(log) == {"val_fd": [(100.0, 40.0), (200.0, 25.0)],
                                                    "val_tstr_acc": [(100.0, 0.5), (200.0, 0.75)]}
    out = run_report(run)
    md = (out / "report.md").read_text()
    assert caption in md
    name = next(line for line in md.splitlines() if caption in line).split("(")[-1].rstrip(")")
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_study_too_small_to_detect_anything_says_so():
    from mrisynth.report.markdown import comparison_cells

    comp = {"diff": 0.0, "lo": -0.43, "hi": 0.43, "p_holm": 1.0, "verdict": "no detectable difference"}
    assert comparison_cells({**comp, "mdd": 0.298})[2] == "no detectable difference (could detect ±29.8 pts)"
    assert comparison_cells({**comp, "mdd": 1.283})[2] == (
        "no detectable difference (could detect no possible difference: ±128 pts needed; add runs or test patients)")
