"""Allows `python -m mrisynth ...` and `accelerate launch -m mrisynth ...`."""

from mrisynth.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
