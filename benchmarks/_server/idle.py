"""Target 2: with every camera configured and no viewer ever connected, nothing happens.

Measured right after start-up: the server's CPU over the idle window, and from the camera
process, streams opened before/after and the most served at once (no connection may be opened).
"""

from __future__ import annotations

import asyncio
import time

from benchmarks._harness.procs import MachineSample
from benchmarks._server.context import Bench
from benchmarks._server.results import IdleResult
from benchmarks._server.windows import Env


async def idle_section(bench: Bench, env: Env) -> None:
    plan = bench.plan
    await asyncio.sleep(3.0)
    before = await env.cameras.await_stats()
    t0 = time.time()
    c0, m0 = env.server.cpu(), MachineSample.now()
    await asyncio.sleep(plan.idle)
    c1, m1 = env.server.cpu(), MachineSample.now()
    after = await env.cameras.await_stats()
    stats = await env.poller.json("/stats")
    opened = {cam: after[cam].streams_total - before[cam].streams_total for cam in after}
    clients = {cam: after[cam].stream_clients for cam in after}
    max_during = max(env.cameras.max_clients(cam, since=t0) for cam in after)
    cpu = c1.percent_since(c0)
    connections = sum(opened.values()) + sum(clients.values()) + max_during
    upstream_open = [cam for cam, s in stats["cameras"].items() if s["upstream_open"]]
    bench.results.idle = IdleResult(
        seconds=round(c1.wall - c0.wall, 3),
        cameras_configured=len(stats["cameras"]),
        cpu_pct=round(cpu, 3),
        machine_cores_busy=m1.cores_busy_since(m0),
        streams_opened=opened,
        stream_clients_at_end=clients,
        server_upstream_open=upstream_open,
        threads=stats["process"]["threads"],
        tasks=stats["process"]["tasks"],
    )
    bench.target(
        "2a",
        "no viewers: camera connections",
        f"{connections}",
        "0",
        connections == 0 and not upstream_open,
        f"{len(stats['cameras'])} cameras configured, {plan.idle:g} s idle",
    )
    bench.target(
        "2b",
        "no viewers: server CPU",
        f"{cpu:.3f} % of a core",
        "<= 0.5 %",
        cpu <= 0.5,
        f"psutil user+system of the server process over {c1.wall - c0.wall:.1f} s",
    )
