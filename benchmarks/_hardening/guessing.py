"""Password guessing floods (issue 15): how long a correct login takes while wrong guesses pour in.

Each measurement is a fresh ``espdetect serve`` (`CliServer`, default limits, a real 600 000
iteration PBKDF2 password hash, a bearer token for reading ``/stats``), so the correct login is
never one the server has already verified. Its camera is never opened: no viewer asks for it.
Cases, alternated in a rotating order over ``trials`` rounds:

* ``alone``: the real user's correct HTTP Basic request (``GET /session`` from 127.0.0.1, a new
  connection) on an idle server;
* ``one-address``: the same while ``concurrency`` clients, all from 127.0.0.2, send wrong
  passwords, each sending the next one as soon as an answer comes (ignoring ``Retry-After``, as
  an attacker would);
* ``many-addresses``: the same with each client from its own address, 127.0.0.2 and up.

The flood runs for `WARMUP` seconds before the user's request. The attackers are a child process
at ``nice 10``: on a real attack their CPU is not the server's machine's, and on a 2-core machine
unthrottled request loops would measure CPU starvation instead. The delay a flood causes is the
median with it minus the median alone; its maximum is reported too.

Measured by ``python -m benchmarks.bench_hardening --out DIR --only guessing``.

The attacking child (started by the measurement)::

    python -m benchmarks._hardening.guessing attack PORT CONCURRENCY ADDRESS...
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread
import httpx

from benchmarks._hardening import Section, SectionResult
from benchmarks._harness.procs import CpuSample, ProcessGroup, command_lines, emit, module_argv
from benchmarks._harness.report import Spread, markdown_table
from benchmarks._harness.server import CliServer
from benchmarks._server.results import TargetRow, add_target
from espdetect.server.passwords import hash_password, hash_token, new_token, verify_password

__all__ = ["CASES", "GUESSING", "GuessingResult", "Login", "guessing", "guessing_targets"]

logger = logging.getLogger(__name__)

CASES: Final = ("alone", "one-address", "many-addresses")
#: Issue 15's target: this many concurrent wrong guesses delay a correct login by at most this.
CONCURRENCY: Final = 40
DELAY_TARGET_MS: Final = 500.0
#: Seconds the flood runs before the user's request (every attacker answered a few times).
WARMUP: Final = 2.0
USER_ADDRESS: Final = "127.0.0.1"
#: Never connected to: the server opens a camera only for a viewer.
UNUSED_CAMERA: Final = "http://127.0.0.1:9/stream"
#: This module by name (``__name__`` is ``__main__`` when it is run by hand).
_MODULE: Final = "benchmarks._hardening.guessing"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def attacker_addresses(case: str, concurrency: int) -> list[str]:
    """The source addresses of a case's attacking clients (none when ``alone``).

    Example:
        >>> attacker_addresses("many-addresses", 3), attacker_addresses("one-address", 3)
        (['127.0.0.2', '127.0.0.3', '127.0.0.4'], ['127.0.0.2'])
    """
    if case == "alone":
        return []
    if case == "one-address":
        return ["127.0.0.2"]
    if not 1 <= concurrency <= 250:
        raise ValueError(f"expected 1..250 attacking addresses (127.0.0.2 ..), got {concurrency}")
    return [f"127.0.0.{2 + k}" for k in range(concurrency)]


# -- the attacking child ----------------------------------------------------------------------------


@dataclass
class AttackTally:
    """What the attacking clients got: answers by status code, and failed requests."""

    requests: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    def add(self, status: str) -> None:
        self.requests += 1
        self.answers[status] = self.answers.get(status, 0) + 1


async def _guesser(url: str, address: str, k: int, tally: AttackTally) -> None:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30.0) as client:
        n = 0
        while True:
            n += 1
            try:
                response = await client.get("/session", headers=_basic("admin", f"guess-{k}-{n}"))
            except httpx.HTTPError:
                tally.errors += 1
                await anyio.sleep(0.01)  # the server is stopping or refusing connections
                continue
            tally.add(str(response.status_code))


def _wait_for_stop() -> None:
    for words in command_lines():  # also returns when stdin closes
        if words[0] == "stop":
            return


async def _attack(url: str, concurrency: int, addresses: list[str]) -> AttackTally:
    tally = AttackTally()
    async with anyio.create_task_group() as tg:
        for k in range(concurrency):
            tg.start_soon(_guesser, url, addresses[k % len(addresses)], k, tally)
        with anyio.move_on_after(30.0):
            while tally.requests + tally.errors < concurrency:
                await anyio.sleep(0.01)
        emit("READY", {"pid": os.getpid(), "requests": tally.requests})
        await anyio.to_thread.run_sync(_wait_for_stop, abandon_on_cancel=True)
        tg.cancel_scope.cancel()
    return tally


def _attack_child(argv: list[str]) -> int:
    """Guess until ``stop`` (or stdin closes), then print ``RESULT {AttackTally}``."""
    parser = argparse.ArgumentParser(prog="guessing attack")
    parser.add_argument("port", type=int)
    parser.add_argument("concurrency", type=int)
    parser.add_argument("addresses", nargs="+")
    args = parser.parse_args(argv)
    os.nice(10)
    tally = anyio.run(_attack, f"http://127.0.0.1:{args.port}", args.concurrency, args.addresses)
    emit("RESULT", tally.__dict__)
    return 0


# -- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """One correct login, not yet verified by that server, measured in one case."""

    case: str
    trial: int
    #: From sending the request (new connection included) to the whole answer.
    ms: float
    status: int
    #: What the attackers got meanwhile (None when alone).
    attack: AttackTally | None
    #: The server's ``auth`` statistics just before the login (``running`` and ``waiting``: the
    #: checks it could have had to wait for) and after it (hashes, refusals by reason).
    auth_before: dict[str, int]
    auth: dict[str, int]
    #: The machine's 1-minute load average at the login (other work slows every hash down).
    load: float
    #: The server's CPU (% of one core) over the flood's warm-up: answering refused guesses.
    server_cpu_pct: float


@dataclass(frozen=True)
class GuessingResult:
    """Every measured login, and the cost of one hash on this machine for scale."""

    concurrency: int
    trials: int
    hash_ms: float
    logins: list[Login]

    def of(self, case: str) -> list[Login]:
        return [login for login in self.logins if login.case == case]

    def spread(self, case: str) -> Spread:
        return Spread.of([login.ms for login in self.of(case)])

    def delay_ms(self, case: str) -> tuple[float | None, float | None]:
        """(median with the flood minus median alone, maximum with it minus median alone)."""
        alone, flooded = self.spread("alone"), self.spread(case)
        if alone.p50 is None or flooded.p50 is None or flooded.max is None:
            return None, None
        return round(flooded.p50 - alone.p50, 1), round(flooded.max - alone.p50, 1)

    def refused(self, case: str) -> int:
        """Correct logins of ``case`` that did not get 200."""
        return sum(login.status != 200 for login in self.of(case))


def _login(url: str, password: str) -> tuple[float, int]:
    transport = httpx.HTTPTransport(local_address=USER_ADDRESS)
    with httpx.Client(base_url=url, transport=transport, timeout=60.0) as client:
        start = time.perf_counter()
        response = client.get("/session", headers=_basic("admin", password))
        return round((time.perf_counter() - start) * 1000.0, 1), response.status_code


def _measure(case: str, trial: int, concurrency: int, model: str | None, logs: Path) -> Login:
    password = secrets.token_urlsafe(12)  # a fresh server and a never-used password: nothing cached
    token = new_token()
    bearer = {"Authorization": f"Bearer {token}"}
    env = {
        "ESPDETECT_AUTH_PASSWORD_HASH": hash_password(password),
        "ESPDETECT_AUTH_TOKEN_HASH": hash_token(token),
    }
    args = ["--model", model] if model else []
    name = f"guessing-{case}-{trial}"
    server = CliServer(UNUSED_CAMERA, args, logs / f"{name}-server.log", env=env)
    try:
        addresses = attacker_addresses(case, concurrency)
        with ProcessGroup(logs) as group:
            attack = None
            cpu0 = CpuSample.of(server.ps)
            if addresses:
                argv = module_argv(_MODULE, "attack", str(server.port), str(concurrency), *addresses)
                attack = group.start(f"{name}-attack", argv)
                attack.wait("READY", 60.0)
                time.sleep(WARMUP)
            else:
                time.sleep(0.5)  # the same quiet start as the attackers' child had
            with httpx.Client(base_url=server.url, timeout=30.0, headers=bearer) as reader:
                auth_before: dict[str, int] = reader.get("/stats").json().get("auth") or {}
            load = round(os.getloadavg()[0], 2)
            cpu_pct = round(CpuSample.of(server.ps).percent_since(cpu0), 1)
            ms, status = _login(server.url, password)
            tally = None
            if attack is not None:
                attack.send("stop")
                tally = AttackTally(**attack.wait("RESULT", 60.0))
        with httpx.Client(base_url=server.url, timeout=30.0, headers=bearer) as reader:
            stats = reader.get("/stats").json()
        auth: dict[str, int] = stats.get("auth") or {}
    finally:
        server.terminate()
    logger.info(
        "%s #%d: correct login %s in %.1f ms (load %.2f; server CPU %.0f%%; before it %s hashing, %s "
        "waiting); server hashed %s, refused %s busy, %s backing off, %s concurrent; attackers got %s",
        case, trial, status, ms, load, cpu_pct, auth_before.get("running"), auth_before.get("waiting"),
        auth.get("checks"), auth.get("rejected_busy"), auth.get("rejected_backoff"),
        auth.get("rejected_concurrent"), tally.answers if tally else "-",
    )  # fmt: skip
    return Login(case, trial, ms, status, tally, auth_before, auth, load, cpu_pct)


def _hash_ms() -> float:
    encoded = hash_password("x")
    start = time.perf_counter()
    verify_password("y", encoded)
    return round((time.perf_counter() - start) * 1000.0, 1)


def guessing(
    out_dir: Path, model: str | None = None, trials: int = 5, concurrency: int = CONCURRENCY
) -> GuessingResult:
    """Measure a correct login alone and during both floods, ``trials`` times each, alternating.

    ``out_dir`` receives the servers' and attackers' logs (under ``logs/``).

    Example:
        >>> result = guessing(Path("/tmp/guessing"), trials=1)  # doctest: +SKIP
        >>> result.delay_ms("many-addresses")  # doctest: +SKIP
        (151.2, 151.2)
    """
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    hash_ms = _hash_ms()
    logins = []
    for trial in range(trials):
        # A rotating order: no case always runs first on a cold machine.
        for i in range(len(CASES)):
            case = CASES[(trial + i) % len(CASES)]
            logins.append(_measure(case, trial, concurrency, model, logs))
    return GuessingResult(concurrency, trials, hash_ms, logins)


def guessing_targets(result: GuessingResult) -> list[TargetRow]:
    """G1 (one attacking address) and G2 (one address per attacker): delay <= 500 ms, every login 200."""
    targets: list[TargetRow] = []
    alone = result.spread("alone")
    for number, case, who in (
        ("G1", "one-address", "from one address"),
        ("G2", "many-addresses", "from 40 addresses"),
    ):
        median, worst = result.delay_ms(case)
        refused = result.refused(case) + result.refused("alone")
        flooded = result.spread(case)
        add_target(
            targets,
            number,
            f"correct login delayed by {result.concurrency} concurrent wrong guesses {who}",
            f"{median} ms median (max {worst} ms; login {flooded.p50} ms with the flood, {alone.p50} ms "
            f"alone); {refused} of {2 * result.trials} logins not 200",
            f"<= {DELAY_TARGET_MS:g} ms, every login 200",
            median is not None and median <= DELAY_TARGET_MS and refused == 0,
            f"{result.trials} trials, a fresh server each; one hash takes {result.hash_ms} ms here",
        )
    return targets


def _report(result: GuessingResult) -> SectionResult:
    rows = []
    for case in CASES:
        spread = result.spread(case)
        logins = result.of(case)
        answers: Counter[str] = Counter()
        for login in logins:
            if login.attack is not None:
                answers.update(login.attack.answers)
        checks = statistics.median([login.auth.get("checks", 0) for login in logins]) if logins else None
        ahead = max((login.auth_before.get("running", 0) for login in logins), default=None)
        load = statistics.median([login.load for login in logins]) if logins else None
        cpu = statistics.median([login.server_cpu_pct for login in logins]) if logins else None
        rows.append(
            [case, spread.n, spread.p50, spread.max, result.refused(case), ahead, checks, cpu, load,
             dict(sorted(answers.items()))]
        )  # fmt: skip
    table = markdown_table(
        ["case", "logins", "login p50 ms", "max ms", "not 200", "hashing at login (max)",
         "hashes per server (median)", "server CPU % before login (median)", "load (median)",
         "attackers got"],
        rows,
        align="lrrrrrrrrl",
    )  # fmt: skip
    text = [
        "## Password guessing floods",
        "",
        table,
        "",
        f"Each login on a fresh server; attackers ({result.concurrency} clients, nice 10) flood for "
        f"{WARMUP:g} s before it; one PBKDF2 hash takes {result.hash_ms} ms here.",
        "",
    ]
    return SectionResult(result, guessing_targets(result), text)


def guessing_section(args: argparse.Namespace, logs: Path) -> SectionResult:
    model = os.environ.get("ESPDETECT_MODEL") or None
    return _report(guessing(logs.parent, model, args.guessing_trials, args.guessing_concurrency))


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("guessing")
    group.add_argument("--guessing-trials", type=int, default=5, help="logins per case (default 5)")
    group.add_argument(
        "--guessing-concurrency",
        type=int,
        default=CONCURRENCY,
        help=f"attacking clients (default {CONCURRENCY})",
    )


GUESSING = Section("guessing", "Password guessing floods", _add_arguments, guessing_section)


if __name__ == "__main__":
    if sys.argv[1:2] != ["attack"]:
        sys.exit(
            "this module is the attacking child; measure with "
            "python -m benchmarks.bench_hardening --only guessing"
        )
    sys.exit(_attack_child(sys.argv[2:]))
