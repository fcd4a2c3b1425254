"""The parts of `benchmarks.bench_engine`, one module per section.

* `common`: constants, the plan, per-thread CPU of a process (named through ``py-spy dump``),
  which shared libraries a process has mapped, spreads and ratios;
* `results`: the typed results, as written to engine.json;
* `rss` (section ``rss``), `cameras` (``cameras``), `install` (``install``);
* `profile`: where the server's time goes (``py-spy record`` aggregated per thread and function);
* `report`: engine.md.
"""
