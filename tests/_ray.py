"""A real local Ray cluster for the tests of the Ray backend and Ray sweeps.

`RayCluster` runs ``ray start --head --block`` on loopback with a fixed number of CPUs, so the
tests drive the same head node a user starts, and join it as any other driver does (the address
is ``127.0.0.1:PORT``). ``--block`` keeps the head in the foreground: ending that process ends
the cluster's own processes and no other Ray on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests._lab import free_port

#: Seconds a head node may take to start here (about 10 s on 2 busy cores).
START_TIMEOUT = 120.0


class RayCluster:
    """``with RayCluster(cpus=2) as cluster:`` a head node at ``cluster.address``."""

    def __init__(self, cpus: int = 2) -> None:
        self.cpus = cpus
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Ray's socket paths must stay short: a deep pytest tmp path overflows AF_UNIX's 108 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.log_path = self.temp_dir / "head.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RayCluster:
        ray = Path(sys.executable).with_name("ray")
        # Token authentication off: a loopback-only cluster, joined by servers the tests start
        # without the token file a first `ray.init` would leave in ~/.ray.
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(ray), "start", "--head", "--block",
                    f"--port={self.port}",
                    "--node-ip-address=127.0.0.1",
                    f"--num-cpus={self.cpus}",
                    "--num-gpus=0",
                    "--include-dashboard=false",
                    "--disable-usage-stats",
                    f"--temp-dir={self.temp_dir}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while b"Ray runtime started" not in self.log_path.read_bytes():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log_text = self.log_path.read_text(errors="replace")
                self.__exit__(None, None, None)
                raise RuntimeError(f"ray head did not start:\n{log_text[-3000:]}")
            time.sleep(0.2)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # the head stops its processes one by one: cut it short
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
