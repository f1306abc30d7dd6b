"""Speed and memory scripts; run them as modules from the repo root (`python -m benchmarks.NAME`) or as files."""
