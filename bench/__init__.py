"""The benchmark suite run by `make bench` (python -m bench); results in BENCHMARKS.md."""
