"""A real Mosquitto broker for tests: started on a free loopback port, stopped and started again
on the same port, optionally with a password file and with persistence across restarts.

Tests ask for the ``mosquitto`` fixture, a started broker (skipped, saying why, when Mosquitto is
not installed), or build a `Mosquitto` of another kind after `skip_without_mosquitto`:

    def test_something(mosquitto: Mosquitto) -> None:
        ...  # connect to mosquitto.url; mosquitto.restart() keeps the port
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

__all__ = ["Mosquitto", "mosquitto", "mosquitto_binary", "skip_without_mosquitto"]

HOST = "127.0.0.1"
#: Seconds Mosquitto may take to listen, or to exit once told to.
READY_TIMEOUT = 30.0


def _which(tool: str) -> str | None:
    # Debian puts the broker in /usr/sbin, often not on a user's PATH.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/local/sbin")


def mosquitto_binary() -> str | None:
    """Mosquitto's path, or None when it is not installed."""
    return _which("mosquitto")


def skip_without_mosquitto(*, passwd: bool = False) -> None:
    """Skip the test, saying why, when Mosquitto (or ``passwd``: mosquitto_passwd) is missing."""
    if mosquitto_binary() is None:
        pytest.skip("needs the mosquitto broker (Debian: apt-get install mosquitto)")
    if passwd and _which("mosquitto_passwd") is None:
        pytest.skip("needs mosquitto_passwd (Debian's mosquitto package) for a password file")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class Mosquitto:
    """One Mosquitto process on ``127.0.0.1:port``, configured by a file in ``directory``.

    ``users`` (name: password) turns anonymous access off and writes a password file with
    ``mosquitto_passwd``; ``persistence`` keeps sessions and queued messages across `restart`;
    ``options`` are further lines of the configuration file (``max_packet_size 1000``).

    Example:
        >>> broker = Mosquitto(tmp_path)  # doctest: +SKIP
        >>> broker.start(); broker.url  # doctest: +SKIP
        'mqtt://127.0.0.1:40123'
    """

    def __init__(
        self,
        directory: Path,
        *,
        users: Mapping[str, str] | None = None,
        persistence: bool = False,
        options: Sequence[str] = (),
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.binary = binary
        self.directory = directory
        self.users = dict(users or {})
        self.persistence = persistence
        self.options = list(options)
        self.port = _free_port()
        self.log = directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``, without credentials."""
        return f"mqtt://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker on `port` and return once it accepts connections."""
        if self.running:
            return
        config = self._write_config()
        log = self.log.open("ab")
        try:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()  # the child has its own copy
        self._wait_ready()

    def stop(self) -> None:
        """Stop the broker (SIGTERM: it saves its persistence file) and wait until it has exited."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """`stop`, then `start` on the same port."""
        self.stop()
        self.start()

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {HOST}",
            # When the tests run as root Mosquitto would switch to the "mosquitto" user, which may
            # not read our temporary files; as anyone else this line changes nothing.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self.users:
            lines += ["allow_anonymous false", f"password_file {self._password_file()}"]
        else:
            lines.append("allow_anonymous true")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.directory}/"]
        else:
            lines.append("persistence false")
        lines += self.options
        config = self.directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return config

    def _password_file(self) -> Path:
        tool = _which("mosquitto_passwd")
        if tool is None:
            raise RuntimeError("mosquitto_passwd is not installed")
        path = self.directory / "passwords"
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        for name, password in self.users.items():
            subprocess.run([tool, "-b", str(path), name, password], check=True, capture_output=True)
        return path

    def _wait_ready(self) -> None:
        """Connect until the listener answers; fail early, with its log, if the broker exited."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                log = self.log.read_text(errors="replace")
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}:\n{log}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not listen on {HOST}:{self.port}") from None
                time.sleep(0.02)  # a process starting: nothing to wait on but the port itself


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A started, anonymous Mosquitto broker without persistence; stopped after the test.

    Tests that need another kind build a `Mosquitto` themselves (after `skip_without_mosquitto`).
    """
    skip_without_mosquitto()
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
