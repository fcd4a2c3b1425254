"""What the benchmarks share; import the modules themselves (this package imports nothing).

* `benchmarks._harness.procs`: child processes speaking the ``WORD {json}`` line protocol (both
  ends), CPU and memory sampling with psutil, a group that always stops its children;
* `benchmarks._harness.server`: launching the espdetect server (in a child, or its ``serve`` CLI)
  and emulated cameras in a child process; `benchmarks._harness.children` is that child's side;
* `benchmarks._harness.viewers`: raw-socket HTTP clients: MJPEG and SSE viewers (asyncio and
  blocking), a keep-alive poller, the chunked-transfer decoder;
* `benchmarks._harness.report`: percentile summaries, JSON/CSV/Markdown writing, plots, run metadata.
"""
