"""Two real ``espdetect serve`` processes with ``backend = "ray"`` sharing one Serve deployment of
2 replicas on a local Ray cluster (2 CPUs), 2 emulated cameras each; a replica killed under them."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

pytest.importorskip("ray.serve", reason="needs espdetect[ray]")

from espdetect.emulator import EmulatorConfig, EmulatorThread
from tests._ray import RayCluster
from tests.cli.serve_process import running, stderr_of
from tests.server.conftest import PartReader, labels_until, wait_until

APP = "espdetect-server-test"


@pytest.fixture(scope="module")
def pool_app(ray_cluster: RayCluster) -> Iterator[str]:
    """The application's name; deleted afterwards, giving the cluster's CPUs back."""
    yield APP
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import ray, sys; from ray import serve; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "serve.delete(sys.argv[2])",
            ray_cluster.address,
            APP,
        ],
        check=False,
        timeout=120,
        capture_output=True,
    )


@pytest.fixture
def cameras() -> Iterator[list[EmulatorThread]]:
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(EmulatorThread(EmulatorConfig(fps=10.0, size=(320, 240)))) for _ in range(4)
        ]


def _serve_args(
    cluster: RayCluster, app: str, cams: list[EmulatorThread], tmp: Path, *extra: str
) -> list[str]:
    args = ["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp)]
    for i, cam in enumerate(cams):
        args += ["--camera", f"c{i}={cam.stream_url}"]
    args += ["--backend", "ray", "--ray-address", cluster.address, "--ray-app", app, "--ray-replicas", "2"]
    return [*args, "--always-on", "--no-motion", *extra]


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)


def _remote(client: httpx.Client) -> dict[str, Any]:
    detector: dict[str, Any] = client.get("/stats").json()["detector"]
    assert detector["backend"] == "ray"
    remote: dict[str, Any] = detector["remote"]
    return remote


def _detected(client: httpx.Client) -> dict[str, int]:
    cams = client.get("/stats").json()["cameras"]
    return {cam_id: cam["frames_detected"] for cam_id, cam in cams.items()}


def _replicas_are(client: httpx.Client, n: int) -> bool:
    return bool(_remote(client)["replicas_running"] == n)


def _batches_beyond_one(client: httpx.Client) -> bool:
    return bool((_remote(client)["mean_batch_size"] or 0) > 1.0)


def _detected_beyond(client: httpx.Client, cam_id: str, count: int) -> bool:
    return _detected(client)[cam_id] > count


def _replica_pids(app: str) -> list[int]:
    marker = f"ServeReplica:{app}:detector"
    return [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


def test_two_servers_share_two_replicas_and_survive_a_killed_one(
    ray_cluster: RayCluster, pool_app: str, cameras: list[EmulatorThread], tmp_path: Path
) -> None:
    # Long: one scenario, in the order a site lives it (two servers up, contention, a replica dies).
    with (
        running(_serve_args(ray_cluster, pool_app, cameras[:2], tmp_path / "a")) as (proc_a, url_a),
        running(_serve_args(ray_cluster, pool_app, cameras[2:], tmp_path / "b")) as (proc_b, url_b),
        httpx.Client(base_url=url_a, timeout=30.0) as a,
        httpx.Client(base_url=url_b, timeout=30.0) as b,
    ):
        try:
            servers = {"a": (a, ["c0", "c1"]), "b": (b, ["c0", "c1"])}
            # Every camera of both servers gets detections from the shared pool.
            for client, cam_ids in servers.values():
                for cam_id in cam_ids:
                    assert "person" in labels_until(client, cam_id)
            for client, _ in servers.values():
                assert client.get("/health").json()["detector"] == "ok"
                wait_until(functools.partial(_replicas_are, client, 2), 30.0, "2 replicas")
                # Four cameras contend for two replicas: frames of several cameras share batches.
                wait_until(functools.partial(_batches_beyond_one, client), 60.0, "batches of > 1 frame")
            pids = _replica_pids(pool_app)
            assert len(pids) == 2

            # An annotated viewer on server a keeps receiving frames while a replica dies.
            parts_after_kill = 0
            killed = threading.Event()
            stop = threading.Event()
            broken: list[Exception] = []
            with a.stream("GET", "/cameras/c0/detect") as response:
                reader = PartReader(response)

                def watch() -> None:
                    nonlocal parts_after_kill
                    try:
                        while not stop.is_set():
                            reader.read(1)
                            if killed.is_set():
                                parts_after_kill += 1
                    except Exception as exc:  # the stream broke (it must not)
                        if not stop.is_set():
                            broken.append(exc)

                watcher = threading.Thread(target=watch, daemon=True)
                watcher.start()
                before = {name: _detected(client) for name, (client, _) in servers.items()}
                os.kill(pids[0], signal.SIGKILL)
                killed.set()
                # Detections resume on every camera by themselves, and Serve replaces the replica.
                for name, (client, cam_ids) in servers.items():
                    for cam_id in cam_ids:
                        wait_until(
                            functools.partial(_detected_beyond, client, cam_id, before[name][cam_id] + 5),
                            60.0,
                            f"detections on {name}/{cam_id} after the kill",
                        )
                wait_until(lambda: len(_replica_pids(pool_app)) == 2, 60.0, "a replacement replica")
                wait_until(functools.partial(_replicas_are, a, 2), 60.0, "the pool at 2 replicas again")
                stop.set()
                watcher.join(10)
            assert broken == [] and parts_after_kill > 10
            for client, _ in servers.values():
                assert client.get("/health").json()["status"] == "ok"
        finally:
            _stop(proc_a)
            _stop(proc_b)
        # A graceful stop: uvicorn re-raises SIGTERM after its shutdown (not Ray's exit(15)).
        for proc in (proc_a, proc_b):
            assert proc.returncode in (0, -signal.SIGTERM) and "all cameras closed" in stderr_of(proc)


def test_an_unanswered_pool_degrades_health_while_the_stream_goes_on(
    ray_cluster: RayCluster, pool_app: str, cameras: list[EmulatorThread], tmp_path: Path
) -> None:
    # A timeout no call can meet: every model call is let go, as with a pool that went away.
    args = _serve_args(ray_cluster, pool_app, cameras[:1], tmp_path, "--ray-timeout", "0.001")
    with running(args) as (proc, url), httpx.Client(base_url=url, timeout=30.0) as client:
        try:
            wait_until(lambda: client.get("/health").json().get("detector") == "degraded", 30.0, "degraded")
            health = client.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert "no answer within 0.001 s" in health.json()["reason"]
            ready = client.get("/ready")
            assert ready.status_code == 503 and not ready.json()["detector"]["ready"]
            remote = _remote(client)
            assert remote["healthy"] is False and remote["timeouts"] > 0
            assert client.get("/stats").json()["cameras"]["c0"]["detector_errors"] > 0
            # The annotated stream goes on without boxes.
            with client.stream("GET", "/cameras/c0/detect") as response:
                reader = PartReader(response)
                assert all(part.body.startswith(b"\xff\xd8") for part in reader.read(5))
            metrics = client.get("/metrics").text
            assert 'espdetect_ray_timeouts_total{app="espdetect-server-test"}' in metrics
            assert "espdetect_detector_healthy 0.0" in metrics
        finally:
            _stop(proc)
