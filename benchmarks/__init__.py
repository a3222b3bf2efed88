"""Benchmarks of resflax against a PyTorch reference; see benchmarks/run.py and BENCHMARKS.md."""
