"""The project's benchmarks: each module prints its figures and writes JSON to bench/results
(with the CPU model and flags). Run them from the repository root: ``python -m bench.<name>``."""
