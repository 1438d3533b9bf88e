"""Benchmarks for ScaiVault (not tests): run with `make bench` or `python -m bench.run`."""
