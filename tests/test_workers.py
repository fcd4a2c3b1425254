"""Workers: model calls bounded by detect_slots and taken in turn, rendering on its own threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from espdetect.workers import Workers

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0  # safety net only: the threads below meet on barriers and events


class Tracker:
    """A blocking call that records how many copies of itself run at once."""

    def __init__(self, meet: int) -> None:
        self.meet = meet
        self.calls = 0
        self.active = 0
        self.most = 0
        self._lock = threading.Lock()
        #: The first ``meet`` calls and the test meet here: it trips only if they run side by side.
        self.barrier = threading.Barrier(meet + 1, timeout=TIMEOUT)
        self.release = threading.Event()

    def __call__(self, value: int) -> int:
        with self._lock:
            first = self.calls < self.meet
            self.calls += 1
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            if first:
                self.barrier.wait()
            self.release.wait(TIMEOUT)
            return value * 2
        finally:
            with self._lock:
                self.active -= 1


@pytest.mark.parametrize(
    ("slots", "threads", "message"),
    [
        pytest.param(0, 1, "detect_slots must be >= 1, got 0", id="slots"),
        pytest.param(1, 0, "render_threads must be >= 1, got 0", id="render"),
    ],
)
def test_rejects_empty_pools(slots: int, threads: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Workers(detect_slots=slots, render_threads=threads)


@pytest.mark.parametrize("slots", [1, 2])
async def test_detect_slots_bound_the_model_calls_running_at_once(slots: int) -> None:
    workers = Workers(detect_slots=slots, render_threads=1)
    call = Tracker(meet=slots)
    try:
        tasks = [asyncio.create_task(workers.detect(call, i)) for i in range(slots + 2)]
        await asyncio.to_thread(call.barrier.wait)  # the first `slots` calls, plus this thread
    except threading.BrokenBarrierError:
        pytest.fail(f"expected {slots} model calls to run at once")
    finally:
        call.release.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT) == [i * 2 for i in range(slots + 2)]
    assert call.most == slots
    workers.close()


async def test_rendering_never_waits_behind_a_model_call() -> None:
    workers = Workers(detect_slots=1, render_threads=1)
    held = threading.Event()
    try:
        model_call = asyncio.create_task(workers.detect(held.wait, TIMEOUT))
        assert await asyncio.wait_for(workers.render(sum, [1, 2]), TIMEOUT) == 3
        assert not model_call.done()
    finally:
        held.set()
    assert await asyncio.wait_for(model_call, TIMEOUT) is True
    workers.close()


async def test_detection_turns_go_in_the_order_asked() -> None:
    workers = Workers(detect_slots=1)
    order: list[int] = []
    first_in = asyncio.Event()
    leave = asyncio.Event()

    async def camera(n: int) -> None:
        async with workers.detection_turn():
            order.append(n)
            if n == 0:
                first_in.set()
                await leave.wait()

    tasks = [asyncio.create_task(camera(0))]
    await asyncio.wait_for(first_in.wait(), TIMEOUT)
    tasks += [asyncio.create_task(camera(n)) for n in (1, 2, 3)]
    for _ in range(5):
        await asyncio.sleep(0)  # let them all queue for the turn
    assert order == [0]
    leave.set()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert order == [0, 1, 2, 3]
    workers.close()


async def test_close_refuses_new_work() -> None:
    workers = Workers()
    assert await workers.render(len, "abc") == 3
    workers.close()
    workers.close()  # idempotent
    with pytest.raises(RuntimeError, match="shutdown"):
        await workers.detect(len, "abc")
