"""Benchmarks for imagine-bot (not tests): `python -m bench`, see BENCHMARKS.md."""
