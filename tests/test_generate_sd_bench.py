"""The SD throughput benchmark runs end to end at a tiny size on the CPU (its numbers mean nothing here)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "generator_throughput.py"


def test_bench_tiny_reports_both_sides(tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", [str(BENCH), "--tiny", "--iters", "1", "--json", str(out)])
    runpy.run_path(str(BENCH), run_name="__main__")
    report = json.loads(out.read_text())
    for part in ("generation", "finetune"):
        assert report[part]["plain_img_per_s"] > 0 and report[part]["ours_img_per_s"] > 0
        assert report[part]["speedup"] > 0
    assert report["model"] == "tiny" and report["peak_host_rss_gib"] > 0
