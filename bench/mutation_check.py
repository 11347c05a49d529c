"""Mutation check: plant small plausible bugs one at a time and see whether the default tests catch each.

    python bench/mutation_check.py                     # every mutant in bench/mutants.py
    python bench/mutation_check.py --only classify,data
    python bench/mutation_check.py --list              # the table, nothing run

The shared working tree is never touched: HEAD (or with --working-tree, the tracked and untracked, not ignored,
files as they are now) is copied to a fresh folder under /tmp, the tests run there with PYTHONPATH at the copy's src/ (checked: the copy's `mrisynth` is
the one imported, not the installed one), and each mutant is written into the copy, tested, then undone.
A mutant must apply exactly (its snippet found once in its file) or the run stops before testing anything.
The mutants' test files must pass unmutated first, else "caught" would mean nothing.

A mutant is caught when pytest fails (exit 1) on its test files; an error exit (2-4: collection or usage) is
reported apart, since it is not a test noticing the bug. Prints one line per mutant and the score, and writes
the results as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mutants import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "src/mrisynth"


def copy_head(dest: Path) -> None:
    """Export the committed tree (HEAD) to `dest`: what others are editing right now does not leak in."""
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def copy_working_tree(dest: Path) -> None:
    """Copy the files git knows (tracked, and untracked but not ignored) from ROOT to `dest`."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def environment(copy: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(copy / "src"), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports_copy(copy: Path) -> None:
    """Stop unless `import mrisynth` in the copy's environment loads the copy's package."""
    out = subprocess.run([sys.executable, "-c", "import mrisynth; print(mrisynth.__file__)"], cwd=copy,
                         env=environment(copy), check=True, capture_output=True, text=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        sys.exit(f"mutation check: the copy imports {out}, not its own src/; refusing to run")


def check_applies(copy: Path, mutants: list[Mutant]) -> None:
    """Stop when a mutant's snippet is not found exactly once in its file (the code moved on: update the table)."""
    bad = []
    for m in mutants:
        count = (copy / PACKAGE / m.file).read_text().count(m.original)
        if count != 1:
            bad.append(f"  {m.name}: snippet found {count} times in {m.file}")
    if bad:
        sys.exit("mutation check: these mutants do not apply:\n" + "\n".join(bad))


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, float, str]:
    """pytest's exit code (124 on timeout), seconds and output tail for `tests`, run in `copy` (default markers)."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=copy, env=environment(copy), capture_output=True, text=True, timeout=timeout)
        rc, tail = done.returncode, (done.stdout + done.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        rc, tail = 124, ""
    return rc, time.perf_counter() - start, tail


def run_mutant(copy: Path, m: Mutant, timeout: float) -> dict:
    path = copy / PACKAGE / m.file
    original = path.read_text()
    path.write_text(original.replace(m.original, m.mutated, 1))
    try:
        rc, seconds, _ = run_tests(copy, m.tests, timeout)
    finally:
        path.write_text(original)
    outcome = "caught" if rc == 1 else "SURVIVED" if rc == 0 else "timeout" if rc == 124 else f"error (exit {rc})"
    return {"name": m.name, "group": m.group, "file": m.file, "outcome": outcome, "seconds": round(seconds, 1),
            "why": m.why, "tests": list(m.tests)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated groups (classify, data, study, generate) or mutant names")
    parser.add_argument("--working-tree", action="store_true", help="test the working tree's files, not HEAD")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant's test run")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "mutation_check.json")
    args = parser.parse_args(argv)
    groups = set(filter(None, args.only.split(",")))
    mutants = [m for m in MUTANTS if not groups or m.group in groups or m.name in groups]
    if args.list:
        for m in mutants:
            print(f"{m.name:28s} {m.file:24s} {m.why}")
        return 0
    copy = Path(tempfile.mkdtemp(prefix="mrisynth-mutants-"))
    try:
        (copy_working_tree if args.working_tree else copy_head)(copy)
        check_imports_copy(copy)
        check_applies(copy, mutants)
        tests = tuple(sorted({t for m in mutants for t in m.tests}))
        rc, seconds, tail = run_tests(copy, tests, args.timeout)
        if rc != 0:
            sys.exit(f"{tail}\nmutation check: the unmutated tests fail (exit {rc}): fix them first")
        print(f"unmutated: {len(tests)} test files pass in {seconds:.0f} s (copy at {copy})", flush=True)
        results = []
        for m in mutants:
            results.append(run_mutant(copy, m, args.timeout))
            r = results[-1]
            print(f"{r['outcome']:14s} {r['seconds']:6.1f}s  {m.name:28s} {m.why}", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    caught = sum(r["outcome"] == "caught" for r in results)
    print(f"\ncaught {caught} of {len(results)} ({100 * caught / len(results):.0f}%)")
    for r in results:
        if r["outcome"] != "caught":
            print(f"  not caught: {r['name']} ({r['outcome']}): {r['why']}")
    args.out.write_text(json.dumps({"caught": caught, "total": len(results), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
