"""A real JupyterLab server for the browser tests of the notebooks (tests/test_notebooks_lab.py).

`LabServer` runs ``python -m jupyterlab`` with this interpreter (so the ``python3`` kernelspec,
whose argv starts with ``python``, launches this interpreter: the venv), on a free loopback port,
with a token, in a folder of the caller's choosing. Its Jupyter config, data, runtime, settings
and workspace folders are temporary ones, so nothing of the user's (kernels, settings, a restored
workspace) leaks in, and nothing the test does leaks out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

#: Lab plugins that only talk to the internet or pop up toasts over the notebook.
_DISABLED_PLUGINS = {
    "@jupyterlab/apputils-extension:announcements": True,
    "@jupyterlab/extensionmanager-extension:plugin": True,
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LabServer:
    """``with LabServer(root, home, env) as lab:`` a JupyterLab serving ``root`` at ``lab.url``.

    ``home`` holds the server's own folders and its log (``home/lab.log``); ``env`` is added to the
    server's environment, which its kernels inherit.
    """

    def __init__(self, root: Path, home: Path, env: dict[str, str], start_timeout: float = 120.0) -> None:
        self.root = root
        self.home = home
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "lab.log"
        self.start_timeout = start_timeout
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None

    # -- the server's life ------------------------------------------------------------------------

    def start(self) -> LabServer:
        config = self.home / "config"
        (config / "labconfig").mkdir(parents=True, exist_ok=True)
        (config / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": _DISABLED_PLUGINS})
        )
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_DATA_DIR": str(self.home / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
            "JUPYTER_PLATFORM_DIRS": "0",
            "IPYTHONDIR": str(self.home / "ipython"),
            **self._env,
        }
        # No JUPYTER_PATH or JUPYTER_CONFIG_PATH of the caller's: only this interpreter's prefix.
        env.pop("JUPYTER_PATH", None)
        env.pop("JUPYTER_CONFIG_PATH", None)
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.terminals_enabled=False",
            "--allow-root",  # CI containers run as root; a no-op otherwise
            f"--LabApp.user_settings_dir={self.home / 'settings'}",
            f"--LabApp.workspaces_dir={self.home / 'workspaces'}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll ``/api/status`` (the server is another process: no event to wait on) until it answers."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if self.api("GET", "/api/status", timeout=5.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"JupyterLab did not answer within {self.start_timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the server shuts its kernels down), then SIGKILL when it does not exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- talking to it ----------------------------------------------------------------------------

    def api(self, method: str, path: str, timeout: float = 30.0, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {self.token}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=timeout, **kwargs)

    def lab_url(self, notebook: str, workspace: str) -> str:
        """The notebook opened in a fresh workspace of its own (nothing restored from another test)."""
        return f"{self.url}/lab/workspaces/{workspace}/tree/{notebook}?token={self.token}"

    def shutdown_kernels(self) -> None:
        """End every session and its kernel (a notebook that failed half-way may still be running)."""
        with contextlib.suppress(httpx.HTTPError):  # a server that is gone has no kernels either
            for session in self.api("GET", "/api/sessions").json():
                self.api("DELETE", f"/api/sessions/{session['id']}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
