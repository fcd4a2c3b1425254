from __future__ import annotations

import asyncio

import pytest

from espdetect.latest import Latest, SlotClosed

pytestmark = pytest.mark.anyio

TIMEOUT = 5.0


async def _settle() -> None:
    """Let every runnable task reach its next await (a few loop passes, no wall-clock wait)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_empty_slot() -> None:
    slot: Latest[int] = Latest()
    assert slot.version == 0
    assert slot.value is None
    assert not slot.closed


async def test_next_after_returns_the_newest_value_and_skips_missed_ones() -> None:
    slot: Latest[str] = Latest()
    for v in "abc":
        slot.publish(v)
    assert slot.version == 3
    assert await slot.next_after(0) == (3, "c")
    assert await slot.next_after(2) == (3, "c")
    slot.publish("d")
    assert await slot.next_after(3) == (4, "d")


async def test_waiter_wakes_on_publish() -> None:
    slot: Latest[int] = Latest()
    waiter = asyncio.create_task(slot.next_after(0))
    await _settle()
    assert not waiter.done()
    slot.publish(7)
    assert await asyncio.wait_for(waiter, TIMEOUT) == (1, 7)


async def test_waiter_does_not_wake_for_what_it_has_seen() -> None:
    slot: Latest[int] = Latest()
    slot.publish(1)
    waiter = asyncio.create_task(slot.next_after(1))
    await _settle()
    assert not waiter.done()
    slot.publish(2)
    assert await asyncio.wait_for(waiter, TIMEOUT) == (2, 2)


async def test_slow_consumer_skips_to_the_newest() -> None:
    slot: Latest[int] = Latest()
    seen: list[int] = []
    version = 0
    for burst in ([1, 2, 3], [4], [5, 6]):
        for v in burst:
            slot.publish(v)
        version, value = await slot.next_after(version)
        seen.append(value)
    assert seen == [3, 4, 6]


async def test_one_publish_wakes_every_consumer() -> None:
    slot: Latest[int] = Latest()
    waiters = [asyncio.create_task(slot.next_after(0)) for _ in range(50)]
    await _settle()
    assert not any(w.done() for w in waiters)
    slot.publish(42)
    results = await asyncio.wait_for(asyncio.gather(*waiters), TIMEOUT)
    assert results == [(1, 42)] * 50


async def test_consumers_at_different_versions() -> None:
    slot: Latest[int] = Latest()
    slot.publish(10)
    behind = asyncio.create_task(slot.next_after(0))
    current = asyncio.create_task(slot.next_after(1))
    await _settle()
    assert behind.done() and behind.result() == (1, 10)
    assert not current.done()
    slot.publish(11)
    assert await asyncio.wait_for(current, TIMEOUT) == (2, 11)


async def test_close_wakes_every_waiter_with_slot_closed() -> None:
    slot: Latest[int] = Latest()
    slot.publish(1)
    waiters = [asyncio.create_task(slot.next_after(1)) for _ in range(5)]
    await _settle()
    slot.close()
    assert slot.closed
    done, pending = await asyncio.wait(waiters, timeout=TIMEOUT)
    assert not pending
    for w in done:
        with pytest.raises(SlotClosed):
            w.result()
    with pytest.raises(SlotClosed):
        await slot.next_after(1)


async def test_closed_slot_still_hands_out_a_value_the_consumer_has_not_seen() -> None:
    slot: Latest[int] = Latest()
    slot.publish(1)
    slot.close()
    assert await slot.next_after(0) == (1, 1)
    with pytest.raises(SlotClosed):
        await slot.next_after(1)


async def test_close_before_any_value() -> None:
    slot: Latest[int] = Latest()
    slot.close()
    with pytest.raises(SlotClosed):
        await slot.next_after(0)


async def test_reopen_allows_waiting_again_and_keeps_the_value() -> None:
    slot: Latest[int] = Latest()
    slot.publish(5)
    slot.close()
    slot.reopen()
    assert not slot.closed
    assert slot.value == 5
    waiter = asyncio.create_task(slot.next_after(1))
    await _settle()
    assert not waiter.done()
    slot.publish(6)
    assert await asyncio.wait_for(waiter, TIMEOUT) == (2, 6)
    slot.reopen()  # reopening an open slot changes nothing
    assert not slot.closed


async def test_publish_after_close_keeps_the_slot_closed() -> None:
    slot: Latest[int] = Latest()
    slot.close()
    slot.publish(3)
    assert slot.closed
    assert await slot.next_after(0) == (1, 3)
    with pytest.raises(SlotClosed):
        await asyncio.wait_for(slot.next_after(1), TIMEOUT)


async def test_cancelled_waiter_does_not_disturb_others() -> None:
    slot: Latest[int] = Latest()
    a = asyncio.create_task(slot.next_after(0))
    b = asyncio.create_task(slot.next_after(0))
    await _settle()
    a.cancel()
    await _settle()
    slot.publish(1)
    assert await asyncio.wait_for(b, TIMEOUT) == (1, 1)
    assert a.cancelled()


async def test_falsy_values_are_values() -> None:
    slot: Latest[int] = Latest()
    slot.publish(0)
    assert await asyncio.wait_for(slot.next_after(0), TIMEOUT) == (1, 0)
