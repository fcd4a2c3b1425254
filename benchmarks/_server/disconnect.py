"""Target 1: a viewer's work stops when it leaves; the last viewer's camera connection closes.

(a) While one other viewer keeps the camera busy: open an annotated viewer, read one part,
close the socket, then poll ``/health`` back to back until ``viewers`` drops (upper bound: the
first reply showing it gone). (b) The last viewer: the camera process timestamps the moment its
stream count drops to 0. (c) The last viewer, CPU: the server's CPU sampled every `CPU_STEP`
after the disconnect; "work stopped" is the end of the last interval using >= `BUSY_PCT`.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from benchmarks._harness.procs import cpu_trace
from benchmarks._harness.report import Spread
from benchmarks._server.context import Bench
from benchmarks._server.plan import BUSY_PCT, CPU_STEP, ESPDETECT_BOUNDARY, GRACE
from benchmarks._server.results import DisconnectResult, GoneTrial, LastViewerTrial
from benchmarks._server.windows import Env, close_viewers, open_viewers
from espdetect.stats import percentile

PATH = "/cameras/c0/detect"


async def viewer_gone(env: Env, expect: int, t0: float, timeout: float = 5.0) -> GoneTrial:
    """Poll /health back to back until it shows ``expect`` viewers; times relative to ``t0``."""
    previous_sent = t0
    polls: list[float] = []
    while True:
        sent = time.perf_counter()
        health = await env.poller.json("/health")
        got = time.perf_counter()
        polls.append(got - sent)
        poll_ms = statistics.median(polls) * 1000
        if health["viewers"] <= expect:
            lower = max(0.0, previous_sent - t0) * 1000
            return GoneTrial((got - t0) * 1000, lower, poll_ms, len(polls))
        if got - t0 > timeout:
            return GoneTrial(None, None, poll_ms, len(polls))
        previous_sent = sent


async def _leaving_viewer_trials(bench: Bench, env: Env) -> list[GoneTrial]:
    """(a): viewers leaving while an anchor viewer keeps the camera and the model busy."""
    anchor = (await open_viewers(env, PATH, 1, ESPDETECT_BOUNDARY, wait=60.0))[0]
    trials: list[GoneTrial] = []
    for _ in range(bench.plan.disconnect_trials):
        v = (await open_viewers(env, PATH, 1, ESPDETECT_BOUNDARY))[0]
        if v.first_frame is None:
            trials.append(GoneTrial(error=v.error or "no frame"))
            await close_viewers(env, [v])
            continue
        count = (await env.poller.json("/health"))["viewers"]
        t0 = time.perf_counter()
        await close_viewers(env, [v])
        trials.append(await viewer_gone(env, count - 1, t0))
    await close_viewers(env, [anchor])
    await env.cameras.await_clients("c0", 0, GRACE + 10.0)
    return trials


async def _last_viewer_trial(env: Env) -> LastViewerTrial:
    """(b) and (c): the camera's only viewer leaves."""
    await env.cameras.await_clients("c0", 0, GRACE + 10.0)
    v = (await open_viewers(env, PATH, 1, ESPDETECT_BOUNDARY, wait=30.0))[0]
    await asyncio.sleep(1.0)  # let the pipeline reach its steady state (model busy)
    inference = (await env.poller.json("/stats"))["cameras"]["c0"]["inference_ms"]
    trace = asyncio.create_task(cpu_trace(env.server, GRACE - 0.2, CPU_STEP))
    t0_unix, t0 = time.time(), time.perf_counter()
    await close_viewers(env, [v])
    gone = await viewer_gone(env, 0, t0)
    samples = await trace
    event = await env.cameras.await_event("c0", 0, t0_unix, GRACE + 10.0)
    busy = [end for end, used in samples if used >= BUSY_PCT]
    return LastViewerTrial(
        **vars(gone),
        upstream_closed_ms=None if event is None else (event.t - t0_unix) * 1000,
        cpu_busy_until_ms=round(max(busy, default=0.0) * 1000, 1),
        # A model call already running when the viewer leaves cannot be interrupted.
        inference_p99_ms=inference["p99"],
        cpu_allowed_ms=round((inference["p99"] or 0.0) + 100.0, 1),
        cpu_trace=[(round(end, 3), round(used, 1)) for end, used in samples],
    )


async def disconnect_section(bench: Bench, env: Env) -> None:
    trials = await _leaving_viewer_trials(bench, env)
    last = [await _last_viewer_trial(env) for _ in range(bench.plan.last_viewer_trials)]
    trials += [GoneTrial(t.upper_ms, t.lower_ms, t.poll_ms, t.polls) for t in last]
    uppers = [t.upper_ms for t in trials if t.upper_ms is not None]
    closes = [t.upstream_closed_ms for t in last if t.upstream_closed_ms is not None]
    result = DisconnectResult(
        viewer_gone_ms=Spread.of(uppers),
        viewer_gone_lower_bound_ms=Spread.of([t.lower_ms for t in trials if t.lower_ms is not None]),
        poll_round_trip_ms=Spread.of([t.poll_ms for t in trials if t.poll_ms is not None]),
        trials=len(trials),
        not_gone_within_5s=len(trials) - len(uppers),
        last_viewer_to_upstream_closed_ms=Spread.of(closes),
        last_viewer_trials=last,
        grace_period_s=GRACE,
        last_viewer_cpu_busy_until_ms=Spread.of([t.cpu_busy_until_ms for t in last]),
    )
    bench.results.disconnect = result
    _targets(bench, result, uppers, closes)


def _targets(bench: Bench, result: DisconnectResult, uppers: list[float], closes: list[float]) -> None:
    last = result.last_viewer_trials
    failed = result.not_gone_within_5s
    p99 = percentile(uppers, 99)
    bench.target(
        "1a",
        "viewer disconnect -> its work stopped, p99",
        "n/a" if p99 is None else f"{p99:.1f} ms (p50 {result.viewer_gone_ms.p50:.1f}, n={len(uppers)})",
        "<= 100 ms",
        p99 is not None and p99 <= 100 and failed == 0,
        f"upper bound: first /health reply showing the viewer gone; poll round trip p50 "
        f"{result.poll_round_trip_ms.p50} ms; {failed} trials not gone within 5 s",
    )
    busy_ms = [t.cpu_busy_until_ms for t in last]
    worst_busy = max(busy_ms) if busy_ms else None
    bench.target(
        "1c",
        "last viewer gone -> CPU work (detection, rendering) stopped",
        "n/a"
        if worst_busy is None
        else f"max {worst_busy:.0f} ms, p50 {percentile(busy_ms, 50):.0f} ms (n={len(busy_ms)})",
        "<= the model call in flight (inference p99) + 100 ms",
        worst_busy is not None and all(t.cpu_busy_until_ms <= t.cpu_allowed_ms for t in last),
        f"end of the last {CPU_STEP * 1000:.0f} ms interval in which the server used >= {BUSY_PCT:g} % "
        "of a core; a model call already running when the viewer leaves cannot be interrupted and "
        "runs to its end (inference p99 during the trials: "
        f"{', '.join(str(t.inference_p99_ms) for t in last)} ms)",
    )
    worst = max(closes) if closes else None
    limit = GRACE * 1000 + 100
    bench.target(
        "1b",
        "last viewer gone -> camera connection closed",
        "n/a" if worst is None else f"max {worst:.0f} ms (n={len(closes)})",
        f"<= {limit:.0f} ms (grace {GRACE:g} s + 100 ms)",
        worst is not None and worst <= limit and len(closes) == len(last),
        "time of the emulator's stream count dropping to 0 after the viewer's socket closed",
    )
