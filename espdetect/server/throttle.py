"""`PasswordThrottle`: admission of password checks, so guessing floods cannot delay real users.

A password hash is deliberately slow (about 130 ms here), so unbounded checks queue without end:
forty concurrent wrong guesses would delay a correct login by seconds. This bounds the hashes
running and waiting, makes each client address back off after wrong passwords, and admits
addresses without recent failures first. What is refused gets `AuthThrottled` (429 with
``Retry-After``) before anything is hashed.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import itertools
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Final, Literal

import anyio
import anyio.to_thread

from espdetect.exceptions import EspdetectError
from espdetect.server.stats import AuthStats

__all__ = [
    "BACKOFF_START",
    "FORGET_AFTER",
    "MAX_CLIENTS",
    "AuthThrottled",
    "PasswordThrottle",
    "client_key",
    "cpu_cores",
]

logger = logging.getLogger(__name__)

#: Back-off after the first failure beyond the free ones; it doubles with every further failure.
BACKOFF_START: Final = 0.25
#: Client addresses remembered at most (least recently active forgotten first): an attacker with
#: many addresses cannot grow the table without bound. About 200 bytes each.
MAX_CLIENTS: Final = 4096
#: An address quiet for this long (and at least twice the longest back-off) is forgotten.
FORGET_AFTER: Final = 600.0

RejectReason = Literal["busy", "backoff", "concurrent"]


class AuthThrottled(EspdetectError):
    """A password check was turned away before hashing: answer 429 with ``Retry-After``.

    ``reason`` is ``"busy"`` (every hash slot and queue place taken), ``"backoff"`` (the address
    failed recently and must wait) or ``"concurrent"`` (the address already has a check running).
    """

    def __init__(self, reason: RejectReason, retry_after: float) -> None:
        what = {
            "busy": "a free place for a password check, got all of them taken",
            "backoff": "no password checks from this address while it backs off after wrong ones, got one",
            "concurrent": "one password check at a time from this address, got another",
        }[reason]
        self.reason: RejectReason = reason
        #: Whole seconds, at least 1 (what ``Retry-After`` says).
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"expected {what}; retry after {self.retry_after} s")

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def client_key(host: str | None) -> str:
    """The key a client address is limited under: an IPv4 address, or an IPv6 address's /64.

    One IPv6 host usually holds a whole /64, so limiting single IPv6 addresses would not limit it.

    Example:
        >>> client_key("2001:db8::1"), client_key("::ffff:10.0.0.7"), client_key("10.0.0.7")
        ('2001:db8::/64', '10.0.0.7', '10.0.0.7')
    """
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # a Unix socket path or a test client's made-up name
        return host[:128]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class _Client:
    """What is remembered of one address: its recent failures and refusals."""

    #: Wrong passwords since the last success (or since it was forgotten).
    failures: int = 0
    #: Checks refused (429): a client that ignores Retry-After keeps adding to them.
    refusals: int = 0
    #: When it last failed or was refused (the table is ordered by this).
    seen: float = 0.0
    blocked_until: float = 0.0

    @property
    def rank(self) -> int:
        """Admission order: lower goes first (0: an address without recent failures)."""
        return self.failures + self.refusals


@dataclass
class _Waiter:
    rank: int
    seq: int
    wake: anyio.Event = field(default_factory=anyio.Event)
    state: Literal["waiting", "granted", "evicted"] = "waiting"


@dataclass
class _Check:
    """A check in flight for one address; the same credentials sent again meanwhile share it."""

    key: bytes
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: bool | None = None  # None: it was refused or cancelled


class PasswordThrottle:
    """Admission of password checks: bounded hashing, per-address back-off, fresh addresses first.

    * At most ``workers`` hashes run at once and ``queue`` more wait; a check beyond that gets
      `AuthThrottled` ("busy") at once. An address's rank is its recent failures plus refusals.
      When the queue is full, a newcomer of lower rank takes the place of the highest-ranked
      waiter, who gets "busy" instead; a freed slot goes to the lowest rank, then the longest
      waiting; and ranked addresses hold at most ``workers - 1`` slots (when there are several).
      So a correct login from an address without failures starts hashing at once (with one
      worker: after the running hash), however many addresses flood after failing once.
    * Each address has at most one check in flight (another one gets "concurrent" at once,
      unless it carries the same credentials: then it shares the first one's answer).
    * After ``free_failures`` wrong passwords an address backs off: `BACKOFF_START` seconds,
      doubling with every further failure up to ``backoff_max``; until then its checks get
      "backoff" before anything is hashed. A correct password clears its record; an address
      quiet for `FORGET_AFTER` seconds is forgotten, and at most ``max_clients`` are remembered.

    Single-threaded: used from the server's event loop only (the hash itself runs in a thread).

    Example:
        >>> throttle = PasswordThrottle(workers=2, queue=4, free_failures=3, backoff_max=30.0)
        >>> async def login() -> bool:  # doctest: +SKIP
        ...     return await throttle.check("10.0.0.7", b"key", lambda: verify_password(pw, encoded))
        >>> throttle.backoff(5)
        0.5
    """

    def __init__(
        self,
        workers: int,
        queue: int,
        free_failures: int,
        backoff_max: float,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1 or queue < 0 or max_clients < 1:
            raise ValueError(
                "expected workers >= 1, queue >= 0 and max_clients >= 1, "
                f"got {workers}, {queue} and {max_clients}"
            )
        self.workers = workers
        self.queue = queue
        self.free_failures = free_failures
        self.backoff_max = backoff_max
        self.max_clients = max_clients
        self.clock = clock
        self._forget_after = max(FORGET_AFTER, 2 * backoff_max)
        # Ordered by last failure or refusal: the front is the longest quiet.
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._in_flight: dict[str, _Check] = {}
        self._running = 0
        #: Of them, checks from addresses with recent failures or refusals.
        self._running_ranked = 0
        # At most `queue` long: a list scanned on each change is cheaper than a heap here.
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self._limiter: anyio.CapacityLimiter | None = None
        self.checks = 0
        self.failures = 0
        self.shared = 0
        self.rejected: dict[RejectReason, int] = {"busy": 0, "backoff": 0, "concurrent": 0}

    def backoff(self, failures: int) -> float:
        """Seconds an address must wait after its ``failures``-th consecutive wrong password."""
        beyond = failures - self.free_failures
        if beyond <= 0:
            return 0.0
        return min(self.backoff_max, BACKOFF_START * 2.0 ** min(beyond - 1, 30))

    def stats(self) -> AuthStats:
        return AuthStats(
            checks=self.checks,
            failures=self.failures,
            rejected_busy=self.rejected["busy"],
            rejected_backoff=self.rejected["backoff"],
            rejected_concurrent=self.rejected["concurrent"],
            shared=self.shared,
            running=self._running,
            waiting=len(self._waiting),
            clients=len(self._clients),
        )

    async def check(self, address: str, key: bytes, verify: Callable[[], bool]) -> bool:
        """Run ``verify`` (blocking: a slow hash) in a worker thread if ``address`` may, else raise.

        ``key`` identifies the credentials (a keyed digest, never the password itself).

        Raises:
            AuthThrottled: refused before hashing (busy, backing off, or a check already in flight).
        """
        now = self.clock()
        client = self._client(address, now)
        if client is not None and client.blocked_until > now:
            raise self._refuse(address, "backoff", client.blocked_until - now)
        current = self._in_flight.get(address)
        if current is not None:
            if not hmac.compare_digest(current.key, key):
                raise self._refuse(address, "concurrent", 1.0)
            # A script opening several streams at once with new Basic credentials: one hash.
            self.shared += 1
            await current.done.wait()
            if current.outcome is None:
                raise self._refuse(address, "busy", 1.0)
            return current.outcome
        check = _Check(key)
        self._in_flight[address] = check
        try:
            async with self._slot(address, client.rank if client is not None else 0):
                self.checks += 1
                if self._limiter is None:
                    self._limiter = anyio.CapacityLimiter(self.workers)
                ok = await anyio.to_thread.run_sync(verify, limiter=self._limiter)
            check.outcome = ok
        finally:
            del self._in_flight[address]
            check.done.set()
        self._record(address, ok)
        return ok

    def _client(self, address: str, now: float) -> _Client | None:
        client = self._clients.get(address)
        if client is not None and now - client.seen > self._forget_after:
            del self._clients[address]
            return None
        return client

    def _touch(self, address: str, now: float) -> _Client:
        """The address's record, created if new, moved to the back of the table."""
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = _Client()
        else:
            self._clients.move_to_end(address)
        client.seen = now
        while self._clients:  # the front is the longest quiet: forget what is stale or too much
            oldest = next(iter(self._clients.values()))
            if len(self._clients) <= self.max_clients and now - oldest.seen <= self._forget_after:
                break
            self._clients.popitem(last=False)
        return client

    def _refuse(self, address: str, reason: RejectReason, retry_after: float) -> AuthThrottled:
        self.rejected[reason] += 1
        self._touch(address, self.clock()).refusals += 1
        logger.debug("password check from %s refused: %s", address, reason)
        return AuthThrottled(reason, retry_after)

    def _record(self, address: str, ok: bool) -> None:
        if ok:
            self._clients.pop(address, None)
            return
        self.failures += 1
        now = self.clock()
        client = self._touch(address, now)
        client.failures += 1
        wait = self.backoff(client.failures)
        if wait > 0:
            client.blocked_until = now + wait
            logger.warning(
                "%d wrong passwords from %s: no checks from it for %.2f s", client.failures, address, wait
            )

    @contextlib.asynccontextmanager
    async def _slot(self, address: str, rank: int) -> AsyncIterator[None]:
        """A hash slot, waiting in the queue by rank if none is free (refused when it is full)."""
        if self._admissible(rank):
            # No waiter is admissible (`_release` grants until none is): nobody is overtaken.
            self._take(rank)
        else:
            waiter = self._enqueue(address, rank)
            try:
                await waiter.wake.wait()
            except BaseException:
                if waiter.state == "granted":
                    self._release(rank)  # granted while being cancelled: pass the slot on
                elif waiter.state == "waiting":
                    self._waiting.remove(waiter)
                raise
            if waiter.state == "evicted":
                raise self._refuse(address, "busy", 1.0)
        try:
            yield
        finally:
            self._release(rank)

    def _admissible(self, rank: int) -> bool:
        # Addresses with recent failures or refusals never hold every slot (when there are
        # several): a login from an address without them always finds one free or soon free.
        if self._running >= self.workers:
            return False
        return rank == 0 or self._running_ranked < max(1, self.workers - 1)

    def _take(self, rank: int) -> None:
        self._running += 1
        if rank > 0:
            self._running_ranked += 1

    def _enqueue(self, address: str, rank: int) -> _Waiter:
        waiter = _Waiter(rank, next(self._seq))
        if len(self._waiting) >= self.queue:
            worst = max(self._waiting, key=lambda w: (w.rank, w.seq), default=None)
            if worst is None or worst.rank <= rank:
                raise self._refuse(address, "busy", 1.0)
            self._waiting.remove(worst)
            worst.state = "evicted"
            worst.wake.set()
        self._waiting.append(waiter)
        return waiter

    def _release(self, rank: int) -> None:
        self._running -= 1
        if rank > 0:
            self._running_ranked -= 1
        while self._waiting:
            best = min(self._waiting, key=lambda w: (w.rank, w.seq))
            if not self._admissible(best.rank):  # then no other waiter is either
                break
            self._waiting.remove(best)
            self._take(best.rank)
            best.state = "granted"
            best.wake.set()


def cpu_cores() -> int:
    """CPUs this process may run on (the hash workers by default)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
