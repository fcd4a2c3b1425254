"""`Latest`: an async slot that holds only the newest value, for latest-frame semantics.

Producers overwrite; each consumer asks for "something newer than version v" and gets the
newest value, skipping whatever it missed. Nothing ever queues, so a slow consumer drops
values for itself without delaying the producer or other consumers.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from espdetect.exceptions import SlotClosed

__all__ = ["Latest", "SlotClosed"]

T = TypeVar("T")


class Latest(Generic[T]):
    """Newest-value broadcast slot (single event loop).

    Example:
        >>> async def demo() -> int:
        ...     slot: Latest[int] = Latest()
        ...     slot.publish(1); slot.publish(2)
        ...     version, value = await slot.next_after(0)
        ...     return value
        >>> asyncio.run(demo())
        2
    """

    def __init__(self) -> None:
        self._value: T | None = None
        self._version = 0
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def version(self) -> int:
        """How many values have been published."""
        return self._version

    @property
    def value(self) -> T | None:
        """The newest value, or None before the first publish."""
        return self._value

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, value: T) -> None:
        """Replace the held value and wake every waiting consumer."""
        self._value = value
        self._version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def close(self) -> None:
        """Wake every waiting consumer with `SlotClosed`."""
        self._closed = True
        self._changed.set()

    def reopen(self) -> None:
        """Allow waiting again after `close` (the held value is kept)."""
        if self._closed:
            self._closed = False
            self._changed = asyncio.Event()

    async def next_after(self, version: int) -> tuple[int, T]:
        """Wait for a value newer than ``version``; return (its version, the value).

        Raises:
            SlotClosed: the slot was closed before a newer value came.
        """
        while self._version <= version or self._value is None:
            if self._closed:
                raise SlotClosed
            await self._changed.wait()
        if self._closed and self._version <= version:
            raise SlotClosed
        return self._version, self._value
