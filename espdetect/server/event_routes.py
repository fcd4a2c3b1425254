"""The events API: list, read, picture, delete, and a live feed of server-sent events.

Behind the same middleware as every other route (authentication when it is on). With events
off every route answers 404 saying how to turn them on. Store calls run in a worker thread
(`EventService.in_store`), never on the event loop.
"""

from __future__ import annotations

import itertools
import logging
from typing import Annotated, Any, Final

import anyio
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from espdetect.constraints import CAMERA_ID_PATTERN, EVENT_ID_PATTERN, EVENT_LIST_LIMIT
from espdetect.event_store import StoredEvent
from espdetect.exceptions import InvalidEventId
from espdetect.server.errors import EventNotFound, EventsOff, ViewerLimitReached
from espdetect.server.event_service import EventService
from espdetect.server.routes import HubDep
from espdetect.server.streaming import SSE_KEEPALIVE, SSE_MEDIA_TYPE, SendBody, ViewerStream

__all__ = ["EventList", "router"]

logger = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    """An error's explanation."""

    detail: str


#: Every route answers 404 while events are off; those naming an event, also for an unknown id.
router = APIRouter(
    prefix="/events",
    tags=["events"],
    responses={404: {"model": ErrorDetail, "description": "events are off, or no such event"}},
)

#: Live-feed subscribers at once (each holds a connection and a small buffer).
_MAX_LIVE: Final = 32


async def get_events(hub: HubDep) -> EventService:
    if hub.events is None:
        raise EventsOff()
    return hub.events


EventsDep = Annotated[EventService, Depends(get_events)]
EventId = Annotated[str, Path(pattern=EVENT_ID_PATTERN, max_length=128, description="an event's id")]


class EventList(BaseModel):
    """One page of events, newest first."""

    events: list[dict[str, Any]]
    #: Pass as ``cursor`` for the next page; null on the last page.
    next_cursor: str | None = Field(default=None)


def _event_body(event: StoredEvent) -> dict[str, Any]:
    body = event.to_dict()
    if event.has_snapshot:
        body["snapshot"] = f"/events/{event.id}/snapshot.jpg"
    if event.has_crop:
        body["crop"] = f"/events/{event.id}/snapshot.jpg?crop=true"
    return body


@router.get("")
async def list_events(
    events: EventsDep,
    camera: Annotated[str | None, Query(pattern=CAMERA_ID_PATTERN)] = None,
    label: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    after: Annotated[
        float | None, Query(allow_inf_nan=False, description="start_time at or after (Unix s)")
    ] = None,
    before: Annotated[
        float | None, Query(allow_inf_nan=False, description="start_time before (Unix s)")
    ] = None,
    limit: Annotated[int, Query(ge=EVENT_LIST_LIMIT.low, le=EVENT_LIST_LIMIT.high)] = 50,
    cursor: Annotated[str | None, Query(min_length=3, max_length=200)] = None,
) -> EventList:
    """Stored events, newest first, filtered; follow ``next_cursor`` for older ones."""
    found = await events.in_store(
        lambda: events.store.list(
            camera=camera, label=label, after=after, before=before, limit=limit, cursor=cursor
        )
    )
    next_cursor = found[-1].cursor if len(found) == limit else None
    return EventList(events=[_event_body(event) for event in found], next_cursor=next_cursor)


class _FeedTicket:
    """A live-feed subscriber's place (`StreamTicket`)."""

    _ids = itertools.count(1)
    open = 0

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.released = False
        _FeedTicket.open += 1

    def release(self, reason: str) -> None:
        if not self.released:
            self.released = True
            _FeedTicket.open -= 1
            logger.info("event feed %d closed: %s", self.id, reason)


@router.get(
    "/live",
    response_class=Response,
    responses={503: {"model": ErrorDetail, "description": "the live feed has all its subscribers"}},
)
async def live_events(hub: HubDep, events: EventsDep) -> ViewerStream:
    """Server-sent events: ``event:`` start, update or end, ``data:`` the record's JSON (as on MQTT)."""
    if _FeedTicket.open >= _MAX_LIVE:
        raise ViewerLimitReached("event feed", _MAX_LIVE, "events")
    ticket = _FeedTicket()

    async def body(send: SendBody) -> None:
        await send(b"retry: 2000\n\n")
        async with events.subscribe() as feed:
            while True:
                with anyio.move_on_after(SSE_KEEPALIVE) as wait:
                    try:
                        message = await feed.receive()
                    except anyio.EndOfStream:  # fell behind, or the server is stopping
                        return
                if wait.cancelled_caught:
                    await send(b": keep-alive\n\n")
                    continue
                update = message.update
                await send(
                    f"event: {update.type}\nid: {update.event.id}\ndata: ".encode() + message.body + b"\n\n"
                )

    return ViewerStream(
        body,
        ticket=ticket,
        media_type=SSE_MEDIA_TYPE,
        shutdown=hub.shutdown,
        send_timeout=hub.settings.viewers.viewer_timeout,
    )


@router.get("/{event_id}")
async def get_event(events: EventsDep, event_id: EventId) -> dict[str, Any]:
    """One stored event."""
    event = await events.in_store(events.store.get, event_id)
    if event is None:
        raise EventNotFound(event_id)
    return _event_body(event)


@router.get("/{event_id}/snapshot.jpg", response_class=Response)
async def event_snapshot(
    events: EventsDep, event_id: EventId, crop: Annotated[bool, Query()] = False
) -> Response:
    """The event's best picture (the annotated frame), or with ``crop=true`` the object alone."""
    try:
        path = await events.in_store(events.store.snapshot_path, event_id, crop)
    except InvalidEventId:  # the picture's path is a link out of the snapshot folder
        path = None
    if path is None:
        raise EventNotFound(event_id, picture=True)
    try:
        data = await anyio.Path(path).read_bytes()
    except FileNotFoundError:  # deleted by retention between the look-up and the read
        raise EventNotFound(event_id, picture=True) from None
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})


@router.delete("/{event_id}", status_code=204, response_class=Response)
async def delete_event(events: EventsDep, event_id: EventId) -> Response:
    """Delete an event and its pictures (an active event comes back with its next record)."""
    if not await events.in_store(events.store.delete, event_id):
        raise EventNotFound(event_id)
    return Response(status_code=204)
