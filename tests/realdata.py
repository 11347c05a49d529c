"""Where the opt-in `realdata` tests find the Figshare copy, wherever the repository is cloned.

Order: $MRISYNTH_FIGSHARE; else `shared/data/figshare` (or `data/figshare`) inside the checkout or beside it in
any folder above it; for a git worktree, also above the main checkout it belongs to. The copy is the folder
with `patients.csv` (see its README).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV = "MRISYNTH_FIGSHARE"
MARKER = "patients.csv"
PLACES = ("shared/data/figshare", "data/figshare")


def _main_checkout(root: Path) -> Path | None:
    """The main working tree of a git worktree at `root` (None when git is absent or `root` is no checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=root,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip()).parent if out.returncode == 0 and out.stdout.strip() else None


def candidates(root: Path) -> list[Path]:
    """Folders searched, in order, for a checkout at `root`."""
    starts = [root.resolve()]
    main = _main_checkout(root)
    if main is not None and main.resolve() != starts[0]:
        starts.append(main.resolve())
    out: list[Path] = []
    for start in starts:
        for folder in (start, *start.parents):
            out += [folder / place for place in PLACES if folder / place not in out]
    return out


def find_figshare(root: Path, environ: dict[str, str] | None = None) -> tuple[Path | None, str]:
    """(the Figshare folder or None, a one-line reason to show when it is None)."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV):
        path = Path(environ[ENV])
        if (path / MARKER).is_file():
            return path, ""
        return None, f"{ENV}={path} holds no {MARKER}: point it at the Figshare folder (see its README)"
    for path in candidates(root):
        if (path / MARKER).is_file():
            return path, ""
    return None, (f"real data not found: set {ENV}=/path/to/figshare (the folder with {MARKER}), or put it at "
                  f"shared/data/figshare beside or above {root.resolve()}")
