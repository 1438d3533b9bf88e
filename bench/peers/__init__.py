"""Peer systems that the benchmarks run side by side with ScaiVault (bench.peer)."""
