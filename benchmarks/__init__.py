"""espdetect's benchmarks, run as modules from the repository root (``python -m benchmarks.x``).

Scripts: `benchmarks.bench_server`, `benchmarks.bench_reliability`, `benchmarks.soak`,
`benchmarks.bench_stages`, `benchmarks.bench_detectors`, and `benchmarks.baseline_per_viewer` (the
per-viewer server `bench_server` compares against). What they share (child processes, viewers,
report writing) is in `benchmarks._harness`; see benchmarks/README.md.
"""
