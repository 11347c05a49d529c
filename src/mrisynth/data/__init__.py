"""Data: readers, manifest, splits, cache, phantom, download and leakage audit."""
