"""Guessing floods: bounded password checking, per-address back-off, fresh addresses first.

Attackers connect from other loopback addresses (127.0.0.2 and up), the real user from
127.0.0.1. Hashes are counted by the authenticator's stats; where a test needs checks to stay
in flight, wrong passwords wait on a gate (`GatedHash`), so the tests assert what happened,
never how long it took.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from pydantic import ValidationError

import espdetect.server.auth as auth_module
import espdetect.server.throttle as throttle_module
from espdetect.server.auth import SESSION_COOKIE
from espdetect.server.passwords import hash_password, hash_token, verify_password
from espdetect.server.settings import ServerSettings
from espdetect.server.stats import AuthStats
from espdetect.server.throttle import AuthThrottled, PasswordThrottle, client_key

from .conftest import ServerThread

PASSWORD = "correct horse battery"
TOKEN = "t0ken-for-the-front-end"
# Few iterations: the tests check the logic, not the cost of the hash.
PASSWORD_HASH = hash_password(PASSWORD, iterations=1000)
TOKEN_HASH = hash_token(TOKEN)
USER = "127.0.0.1"


def attacker(n: int) -> str:
    """The n-th attacker address (1: 127.0.0.2)."""
    return f"127.0.0.{n + 1}"


def basic(password: str, user: str = "admin") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class GatedHash:
    """`verify_password` that counts its calls and holds wrong passwords until the gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0
        #: Hold the right password too.
        self.hold_correct = False
        self._lock = threading.Lock()

    def __call__(self, password: str, encoded: str) -> bool:
        with self._lock:
            self.calls += 1
        if password != PASSWORD or self.hold_correct:
            assert self.gate.wait(30), "the test never opened the gate"
        return verify_password(password, encoded)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedHash]:
    gated = GatedHash()
    monkeypatch.setattr(auth_module, "verify_password", gated)
    try:
        yield gated
    finally:
        gated.gate.set()  # never leave a server thread waiting


def secured(make_server: Callable[..., ServerThread], **settings: Any) -> ServerThread:
    return make_server(auth_password_hash=PASSWORD_HASH, auth_token_hash=TOKEN_HASH, **settings)


def auth_stats(server: ServerThread) -> AuthStats:
    stats: AuthStats = server.app.state.authenticator.stats()
    return stats


@asynccontextmanager
async def client_from(server: ServerThread, address: str, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose connections come from ``address`` (any 127.x.y.z reaches the server)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=server.url, transport=transport, timeout=30.0, **kwargs) as client:
        yield client


async def until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)
    assert predicate(), what


async def guess(server: ServerThread, address: str, password: str, into: list[httpx.Response]) -> None:
    async with client_from(server, address) as client:
        into.append(await client.get("/stats", headers=basic(password)))


def refused(response: httpx.Response) -> bool:
    return response.status_code == 429 and int(response.headers["retry-after"]) >= 1


# -- settings and the throttle on its own --------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"auth_workers": -1},
        {"auth_workers": 65},
        {"auth_queue": -1},
        {"auth_queue": 5000},
        {"auth_free_failures": -1},
        {"auth_backoff_max": 0.5},
        {"auth_backoff_max": 7200.0},
    ],
)
def test_limit_settings_are_bounded(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ServerSettings(**settings)


def test_limit_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = ServerSettings().auth
    assert (auth.auth_workers, auth.auth_queue, auth.auth_free_failures, auth.auth_backoff_max) == (
        0,
        4,
        3,
        30.0,
    )
    monkeypatch.setenv("ESPDETECT_AUTH_QUEUE", "9")
    monkeypatch.setenv("ESPDETECT_AUTH_BACKOFF_MAX", "60")
    auth = ServerSettings().auth
    assert (auth.auth_queue, auth.auth_backoff_max) == (9, 60.0)


def test_backoff_doubles_from_a_quarter_second_up_to_the_cap() -> None:
    strict = PasswordThrottle(workers=1, queue=0, free_failures=0, backoff_max=30.0)
    assert [strict.backoff(n) for n in range(10)] == [0, 0.25, 0.5, 1, 2, 4, 8, 16, 30, 30]
    assert strict.backoff(10_000) == 30.0
    lenient = PasswordThrottle(workers=1, queue=0, free_failures=3, backoff_max=30.0)
    assert [lenient.backoff(n) for n in range(1, 6)] == [0, 0, 0, 0.25, 0.5]


def test_client_keys_group_ipv6_networks() -> None:
    assert client_key("127.0.0.2") == "127.0.0.2"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "unknown"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wrong() -> bool:
    return False


@pytest.mark.anyio
async def test_back_off_expires_and_quiet_addresses_are_forgotten() -> None:
    clock = FakeClock()
    throttle = PasswordThrottle(workers=1, queue=0, free_failures=1, backoff_max=30.0, clock=clock)
    assert not await throttle.check("10.0.0.1", b"a", wrong)  # free
    assert not await throttle.check("10.0.0.1", b"b", wrong)  # backs off 0.25 s
    with pytest.raises(AuthThrottled) as refused_:
        await throttle.check("10.0.0.1", b"c", wrong)
    assert (refused_.value.reason, refused_.value.retry_after) == ("backoff", 1)
    clock.now += 0.3
    assert not await throttle.check("10.0.0.1", b"d", wrong)  # admitted again; now 0.5 s
    clock.now += 0.3
    with pytest.raises(AuthThrottled):
        await throttle.check("10.0.0.1", b"e", wrong)
    assert throttle.stats().checks == 3
    # Ten quiet minutes later the address starts afresh: its free failure again.
    clock.now += throttle_module.FORGET_AFTER + 1
    assert not await throttle.check("10.0.0.1", b"f", wrong)
    assert not await throttle.check("10.0.0.1", b"g", wrong)
    # A correct password clears the record at once.
    clock.now += 1.0
    assert await throttle.check("10.0.0.1", b"h", lambda: True)
    assert throttle.stats().clients == 0


@pytest.mark.anyio
async def test_the_address_table_is_bounded() -> None:
    clock = FakeClock()
    throttle = PasswordThrottle(
        workers=1, queue=0, free_failures=0, backoff_max=30.0, max_clients=50, clock=clock
    )
    for i in range(1000):
        clock.now += 0.001
        assert not await throttle.check(f"10.0.{i // 256}.{i % 256}", b"x", wrong)
    assert throttle.stats().clients == 50
    assert throttle.stats().checks == 1000
    # The most recent are remembered (still backing off), the oldest forgotten.
    with pytest.raises(AuthThrottled):
        await throttle.check("10.0.3.231", b"y", wrong)  # the 1000th
    assert not await throttle.check("10.0.0.0", b"y", wrong)  # the first


@pytest.mark.anyio
async def test_fresh_addresses_take_queue_places_from_failed_ones() -> None:
    gate = threading.Event()
    throttle = PasswordThrottle(workers=1, queue=1, free_failures=5, backoff_max=30.0)
    assert not await throttle.check("10.0.0.9", b"x", wrong)  # one failure: ranks behind fresh ones
    outcomes: dict[str, object] = {}

    def held() -> bool:
        assert gate.wait(10)
        return False

    async def attempt(address: str, verify: Callable[[], bool]) -> None:
        try:
            outcomes[address] = await throttle.check(address, b"k", verify)
        except AuthThrottled as exc:
            outcomes[address] = exc.reason

    async with anyio.create_task_group() as tg:
        tg.start_soon(attempt, "10.0.0.1", held)  # runs, held by the gate
        await until(lambda: throttle.stats().running == 1, "a running check")
        tg.start_soon(attempt, "10.0.0.9", wrong)  # queued
        await until(lambda: throttle.stats().waiting == 1, "a queued check")
        tg.start_soon(attempt, "10.0.0.2", lambda: True)  # fresh: takes the place
        await until(lambda: "10.0.0.9" in outcomes, "the failed address evicted")
        tg.start_soon(attempt, "10.0.0.3", lambda: True)  # fresh too, but the queue is full
        await until(lambda: "10.0.0.3" in outcomes, "a refusal")
        gate.set()
    assert outcomes == {"10.0.0.1": False, "10.0.0.9": "busy", "10.0.0.2": True, "10.0.0.3": "busy"}
    assert throttle.stats() == AuthStats(
        checks=3,
        failures=2,
        rejected_busy=2,
        rejected_backoff=0,
        rejected_concurrent=0,
        shared=0,
        running=0,
        waiting=0,
        clients=3,  # two failed, one refused; the one that got in is forgotten
    )


@pytest.mark.anyio
async def test_failed_addresses_never_hold_every_slot() -> None:
    gate = threading.Event()
    throttle = PasswordThrottle(workers=2, queue=2, free_failures=5, backoff_max=30.0)
    for address in ("10.0.0.8", "10.0.0.9"):
        assert not await throttle.check(address, b"x", wrong)
    outcomes: dict[str, object] = {}

    def held() -> bool:
        assert gate.wait(10)
        return False

    async def attempt(address: str, verify: Callable[[], bool]) -> None:
        outcomes[address] = await throttle.check(address, b"k", verify)

    async with anyio.create_task_group() as tg:
        tg.start_soon(attempt, "10.0.0.8", held)
        await until(lambda: throttle.stats().running == 1, "a running check")
        tg.start_soon(attempt, "10.0.0.9", wrong)  # a slot is free, but kept for fresh addresses
        await until(lambda: throttle.stats().waiting == 1, "a queued check")
        await attempt("10.0.0.1", lambda: True)  # fresh: hashed at once, next to the held one
        assert outcomes == {"10.0.0.1": True}
        gate.set()
    assert outcomes == {"10.0.0.1": True, "10.0.0.8": False, "10.0.0.9": False}
    assert throttle.stats().checks == 5


# -- through the server ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_one_address_gets_one_check_at_a_time(
    make_server: Callable[..., ServerThread], hashes: GatedHash
) -> None:
    server = secured(make_server, auth_workers=2)
    hashes.gate.clear()
    responses: list[httpx.Response] = []
    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(guess, server, attacker(1), f"guess-{i}", responses)
        await until(lambda: len(responses) == 39, "39 guesses turned away at once")
        assert hashes.calls == 1 and auth_stats(server).running == 1
        # Meanwhile the real user logs in from another address, on the other hash slot.
        async with client_from(server, USER) as user:
            assert (await user.get("/stats", headers=basic(PASSWORD))).status_code == 200
        hashes.gate.set()
    assert sum(refused(r) for r in responses) == 39
    assert sorted(r.status_code for r in responses)[0] == 401
    stats = auth_stats(server)
    assert (stats.checks, stats.rejected_concurrent, stats.rejected_busy) == (2, 39, 0)
    assert hashes.calls == 2


@pytest.mark.anyio
async def test_the_same_new_credentials_at_once_share_one_check(
    make_server: Callable[..., ServerThread], hashes: GatedHash
) -> None:
    # A script opening several streams at once with Basic credentials not verified yet.
    server = secured(make_server)
    hashes.hold_correct = True
    hashes.gate.clear()
    responses: list[httpx.Response] = []
    async with client_from(server, USER) as script:

        async def fetch() -> None:
            responses.append(await script.get("/stats", headers=basic(PASSWORD)))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(fetch)
            await until(lambda: auth_stats(server).shared == 4, "four requests sharing the first check")
            hashes.gate.set()
    assert [r.status_code for r in responses] == [200] * 5
    assert auth_stats(server).checks == hashes.calls == 1


@pytest.mark.anyio
async def test_a_backing_off_address_is_refused_before_hashing(
    make_server: Callable[..., ServerThread], hashes: GatedHash, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A back-off of 1 s (not 0.25 s) leaves a loaded machine time to send the next request.
    monkeypatch.setattr(throttle_module, "BACKOFF_START", 1.0)
    server = secured(make_server, auth_free_failures=1)
    async with client_from(server, attacker(1)) as bad, client_from(server, USER) as user:
        for password in ("guess-1", "guess-2"):
            assert (await bad.get("/stats", headers=basic(password))).status_code == 401
        assert hashes.calls == 2
        for password in ("guess-3", PASSWORD):  # even the right password waits
            response = await bad.get("/stats", headers=basic(password))
            assert refused(response), response
            assert response.headers["retry-after"] == "1"
            assert "backs off" in response.json()["detail"]
        login = await bad.post("/login", json={"username": "admin", "password": "guess-4"})
        assert refused(login)
        assert hashes.calls == 2
        # Other addresses are not held back.
        assert (await user.get("/stats", headers=basic(PASSWORD))).status_code == 200
        assert hashes.calls == 3
        stats = (await user.get("/stats", headers=basic(PASSWORD))).json()["auth"]
        assert stats["rejected_backoff"] == 3 and stats["failures"] == 2
        # After the back-off the address may try again (and now waits twice as long).
        await anyio.sleep(float(response.headers["retry-after"]) + 0.1)
        assert (await bad.get("/stats", headers=basic("guess-5"))).status_code == 401
        assert hashes.calls == 4
        again = await bad.get("/stats", headers=basic("guess-6"))
        assert refused(again) and again.headers["retry-after"] == "2"


@pytest.mark.anyio
async def test_a_full_queue_refuses_the_overflow_but_not_the_real_user(
    make_server: Callable[..., ServerThread], hashes: GatedHash
) -> None:
    server = secured(make_server, auth_workers=1, auth_queue=2)
    attackers = [attacker(n) for n in range(1, 41)]  # 127.0.0.2 .. 127.0.0.41
    first: list[httpx.Response] = []
    for address in attackers:  # one free failure each: they rank behind a fresh address now
        await guess(server, address, "warm-up", first)
    assert [r.status_code for r in first] == [401] * 40 and hashes.calls == 40
    hashes.gate.clear()
    flood: list[httpx.Response] = []
    async with anyio.create_task_group() as tg:
        for i, address in enumerate(attackers):
            tg.start_soon(guess, server, address, f"guess-{i}", flood)
        await until(lambda: len(flood) == 37, "the overflow refused")
        assert all(refused(r) for r in flood)
        assert (auth_stats(server).running, auth_stats(server).waiting) == (1, 2)
        # The real user, from an address without failures, takes a place in the full queue
        # and is served as soon as the running check is done.
        result: list[httpx.Response] = []

        async def log_in() -> None:
            async with client_from(server, USER) as user:
                result.append(await user.post("/login", json={"username": "admin", "password": PASSWORD}))

        tg.start_soon(log_in)
        await until(lambda: len(flood) == 38, "a failed address evicted from the queue")
        hashes.gate.set()
    assert result[0].status_code == 200 and SESSION_COOKIE in result[0].cookies
    codes = sorted(r.status_code for r in flood)
    assert codes == [401, 401] + [429] * 38
    stats = auth_stats(server)
    assert (stats.checks, stats.rejected_busy, stats.failures) == (43, 38, 42)
    async with client_from(server, USER, headers={"Authorization": f"Bearer {TOKEN}"}) as user:
        metrics = (await user.get("/metrics")).text
    assert "espdetect_auth_rejected_busy_total 38.0" in metrics
    assert "espdetect_auth_checks_total 43.0" in metrics


@pytest.mark.anyio
async def test_sessions_tokens_and_verified_credentials_never_wait(
    make_server: Callable[..., ServerThread], hashes: GatedHash
) -> None:
    server = secured(make_server, auth_workers=1, auth_queue=0, auth_free_failures=0)
    async with client_from(server, USER) as user, client_from(server, attacker(1)) as bad:
        assert (await user.get("/stats", headers=basic(PASSWORD))).status_code == 200  # now verified
        login = await user.post("/login", json={"username": "admin", "password": PASSWORD})
        assert login.status_code == 200
        assert (await bad.get("/stats", headers=basic(PASSWORD))).status_code == 200  # verified too
        assert (await bad.get("/stats", headers=basic("guess"))).status_code == 401  # backs off now
        checks = auth_stats(server).checks
        hashes.gate.clear()
        flood: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:
            for n in range(2, 12):
                tg.start_soon(guess, server, attacker(n), "guess", flood)
            await until(lambda: len(flood) == 9, "the only slot taken, the rest refused")
            # Every way in that needs no new hash still works, also from the backing-off address.
            assert (await user.get("/stats")).status_code == 200  # session cookie
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            for client in (user, bad):
                assert (await client.get("/stats", headers=bearer)).status_code == 200
                assert (await client.get("/stats", headers=basic(PASSWORD))).status_code == 200
            token_login = await bad.post("/login", json={"username": "", "password": TOKEN})
            assert token_login.status_code == 200
            # New credentials do meet the limits.
            assert refused(await user.get("/stats", headers=basic("guess")))
            assert refused(await bad.get("/stats", headers=basic("other")))
            hashes.gate.set()
    assert auth_stats(server).checks == checks + 1
    assert sum(refused(r) for r in flood) == 9
