"""Speed benchmarks (`make bench`): each `bench_*.py` module has `main()` that prints ratios measured
side by side in one run. Targets live here, never in timed tests."""
