"""The parts of `benchmarks.bench_server`, one module per target group.

* `plan`: durations, counts and constants; `context`: the state the sections share;
* `windows`: viewers opened and closed, and what one measured window of a server gives;
* `launch`: every process the selected targets need, started at once;
* `idle` (target 2), `disconnect` (1), `viewers_cost` (3 and 7), `model_rate` (4),
  `latency` (5), `vs_ultralytics` (6), `baseline` (the per-viewer design's references);
* `results`: the typed results of every section, as written to results.json;
* `report`: summary.md, the CSV files and the plots;
* `runner`: the child processes measured next to the server (the model alone, Ultralytics).
"""
