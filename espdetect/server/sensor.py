"""`SensorKeeper`: keeps one camera's sensor settings (frame size, JPEG quality...) as configured.

The CameraWebServer firmware keeps no setting across a reboot, and a reboot looks to the server
like a reconnection of the stream. So on every new stream connection the keeper applies the
desired settings through the camera's ``/control`` and reads ``/status`` back to confirm them
(``vflip``, which ``/status`` has not reported since 2020, is set on each connection without
read-back). While the stream is connected it compares ``/status`` with the desired settings every
``sensor_check_interval`` seconds and reverts what was changed elsewhere (the camera's own web
page): the configuration is the source of truth.

``framesize`` is numbered differently by each firmware generation, so it is applied only once
the generation is known: learned from ``/status`` and the size of a frame
(`espdetect.firmware.generation_from_status`), else the camera's ``firmware`` setting. A size
that generation lacks is refused (logged, counted, shown in ``/sensor``), never guessed.

A camera whose control port answers with something that is not the firmware's ``/status``
(ESPHome, mjpg-streamer) has no control server: that is reported once and the keeper leaves it
alone. A refused or timed-out connection is not that (a rebooting camera refuses): the keeper
tries again at the next connection or check.

`SensorStore` keeps settings changed through ``POST /cameras/{id}/control`` in the data
directory; at start-up a kept value is used only while the configured value it overrode is
unchanged (docs/decisions.md, "Settings, state and results").
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import anyio

from espdetect.camera_control import (
    CameraControl,
    ControlRefused,
    ControlUnreachable,
    NotFirmwareError,
    StatusValue,
    control_url_for,
)
from espdetect.firmware import (
    check_control_value,
    control_variables,
    generation_from_status,
    reported_variables,
)
from espdetect.framesizes import FirmwareGeneration, framesize_table, framesize_value, parse_framesize
from espdetect.server.settings import CameraConfig, merge_sensor

__all__ = [
    "ControlState",
    "SensorCounters",
    "SensorKeeper",
    "SensorReport",
    "SensorStore",
    "SensorValue",
]

logger = logging.getLogger(__name__)

#: A desired value: an integer, or for ``framesize`` a size name.
SensorValue = int | str
#: What the keeper knows of the camera's control server: "unknown" (not asked yet), "ok",
#: "unreachable" (refused or timed out the last time; tried again later), "none" (something that
#: is not the firmware answered: left alone).
ControlState = Literal["unknown", "ok", "unreachable", "none"]

#: Seconds after a new connection during which an unreachable control server is asked again
#: (the firmware opens its two ports one after the other at boot).
_CONNECT_RETRY_FOR: Final = 1.5
_CONNECT_RETRY_EVERY: Final = 0.1
#: Seconds one control request may take: well inside the 2 s the settings have after a connection.
_REQUEST_TIMEOUT: Final = 2.0
_STORE_VERSION: Final = 1
_STORE_FILE: Final = "camera-sensor.json"


@dataclass
class SensorCounters:
    """What one camera's keeper did (in ``/stats`` and ``/metrics`` as ``sensor_*``)."""

    #: Connections after which the desired settings were applied (or found in place) and checked.
    applies: int = 0
    #: ``/control`` requests that set a variable (on connections, reverts and API changes).
    values_set: int = 0
    #: Periodic comparisons of ``/status`` with the desired settings.
    checks: int = 0
    #: Variables found changed on the camera while connected, and set back.
    drift: int = 0
    #: Variables the camera or its firmware generation refused.
    refused: int = 0
    #: Times the control server could not be reached when the keeper needed it.
    unreachable: int = 0


@dataclass(frozen=True)
class SensorReport:
    """``GET /cameras/{id}/sensor``: what the camera should have and what it had when last read."""

    camera: str
    #: Desired settings: configured, with API changes over them.
    desired: Mapping[str, SensorValue]
    #: The camera's ``/status`` when last read (None before the first read).
    actual: Mapping[str, StatusValue] | None
    #: The firmware generation, and whether it was "learned" from the camera or "configured".
    generation: FirmwareGeneration | None
    generation_from: Literal["learned", "configured"] | None
    control: ControlState
    #: Unix time of the last apply after a connection, and seconds from that connection's
    #: first frame until the settings were confirmed.
    last_apply: float | None
    last_apply_seconds: float | None
    #: Variables not applied, with the reason (refused, or framesize until the generation is known).
    refused: Mapping[str, str]
    pending: Mapping[str, str]
    #: Variables set but not confirmed by ``/status`` (vflip is never reported: not listed).
    unconfirmed: tuple[str, ...]
    counters: SensorCounters = field(default_factory=SensorCounters)
    error: str | None = None


class SensorStore:
    """Sensor settings changed at run time, per camera, in ``<data_dir>/camera-sensor.json``.

    Each value is kept with the configured value it overrode, so that editing the configuration
    wins over an older API change. Reads and writes are blocking: call them in a worker thread.

    Example:
        >>> store = SensorStore(Path("/tmp/espdetect-data"))  # doctest: +SKIP
        >>> store.save("front", "quality", 20, configured=10)  # doctest: +SKIP
        >>> store.load("front", {"quality": 10})  # doctest: +SKIP
        {'quality': 20}
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / _STORE_FILE
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable camera sensor settings in %s: %s", self.path, exc)
            return {}
        if not isinstance(data, dict) or data.get("version") != _STORE_VERSION:
            logger.warning("ignoring camera sensor settings of another format in %s", self.path)
            return {}
        cameras = data.get("cameras")
        return cameras if isinstance(cameras, dict) else {}

    def load(self, camera_id: str, configured: Mapping[str, SensorValue]) -> dict[str, SensorValue]:
        """The kept values of one camera whose configured value is still the one they overrode."""
        with self._lock:
            entries = self._read().get(camera_id)
        kept: dict[str, SensorValue] = {}
        if not isinstance(entries, dict):
            return kept
        for var, entry in entries.items():
            value = _checked(var, entry.get("value") if isinstance(entry, dict) else None)
            if value is None:
                logger.warning(
                    "%s: ignoring a kept sensor setting that is not valid: %s=%r", camera_id, var, entry
                )
                continue
            if entry.get("configured") == configured.get(var):
                kept[var] = value
            else:
                logger.info(
                    "%s: sensor %s: the configuration changed (%r, was %r): it wins over %r from the API",
                    camera_id,
                    var,
                    configured.get(var),
                    entry.get("configured"),
                    entry["value"],
                )
        return kept

    def save(self, camera_id: str, var: str, value: SensorValue, configured: SensorValue | None) -> None:
        """Keep one value set through the API (atomically: a crash leaves the old file or the new)."""
        with self._lock:
            cameras = self._read()
            entries = cameras.setdefault(camera_id, {})
            if not isinstance(entries, dict):
                entries = cameras[camera_id] = {}
            entries[var] = {"value": value, "configured": configured}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".camera-sensor-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump({"version": _STORE_VERSION, "cameras": cameras}, out, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


def _checked(var: str, value: object) -> SensorValue | None:
    """A kept value as the settings would take it, or None (a hand-edited file, another version)."""
    try:
        if var == "framesize":
            return parse_framesize(value).name if isinstance(value, str) else None
        return check_control_value(var, value)
    except ValueError:
        return None


def _describe_values(values: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "nothing"


class SensorKeeper:
    """Applies and keeps one camera's desired sensor settings (see the module documentation).

    The camera calls `connection_opened` with the first frame of each new stream connection;
    `run` (a task of the hub) does the work, so nothing waits for the camera in the frame path.

    Args:
        camera_id: the camera's id (logs, the store).
        control_url: base URL of its control server.
        configured: the configured desired settings (``[sensor]`` with ``[cameras.sensor]`` over it).
        firmware: the configured firmware generation, used while the camera cannot tell.
        check_interval: seconds between drift checks while connected.
        connected: whether the camera's stream is connected now.
        frame_size: the size of the newest frame of the live stream, or None.
        store: where API changes are kept (None: not kept).

    Example:
        >>> keeper = SensorKeeper("front", "http://192.168.4.1", {"framesize": "VGA"}, None,
        ...                       60.0, lambda: True, lambda: (320, 240))  # doctest: +SKIP
        >>> async with anyio.create_task_group() as tg:  # doctest: +SKIP
        ...     tg.start_soon(keeper.run)
    """

    def __init__(
        self,
        camera_id: str,
        control_url: str,
        configured: Mapping[str, SensorValue],
        firmware: FirmwareGeneration | None,
        check_interval: float,
        connected: Callable[[], bool],
        frame_size: Callable[[], tuple[int, int] | None],
        store: SensorStore | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.configured: dict[str, SensorValue] = dict(configured)
        self.desired: dict[str, SensorValue] = dict(configured)
        self.configured_firmware = firmware
        self.check_interval = check_interval
        self.counters = SensorCounters()
        self._control = CameraControl(control_url, timeout=_REQUEST_TIMEOUT)
        self._connected = connected
        self._frame_size = frame_size
        self._store = store
        self._learned: FirmwareGeneration | None = None
        self._state: ControlState = "unknown"
        self._actual: dict[str, StatusValue] | None = None
        self._last_framesize: int | None = None
        self._refused: dict[str, str] = {}
        self._unconfirmed: tuple[str, ...] = ()
        #: Variables confirmed on the current connection: a later difference is drift.
        self._confirmed: set[str] = set()
        self._last_apply: float | None = None
        self._last_apply_seconds: float | None = None
        self._error: str | None = None
        self._mismatch_logged = False
        #: (monotonic time, frame size) of a connection not handled yet.
        self._pending: tuple[float, tuple[int, int] | None] | None = None
        self._wake: anyio.Event | None = None
        self._lock = anyio.Lock()

    @classmethod
    def for_camera(
        cls,
        camera: CameraConfig,
        check_interval: float,
        connected: Callable[[], bool],
        frame_size: Callable[[], tuple[int, int] | None],
        store: SensorStore | None,
    ) -> SensorKeeper:
        """A keeper for a resolved `espdetect.server.settings.CameraConfig`."""
        url = camera.control_url or control_url_for(camera.url)
        return cls(
            camera.id, url, camera.sensor, camera.firmware, check_interval, connected, frame_size, store
        )

    # -- state ----------------------------------------------------------------------------------

    @property
    def generation(self) -> FirmwareGeneration | None:
        """The firmware generation: learned from the camera, else configured, else None."""
        return self._learned or self.configured_firmware

    @property
    def control_state(self) -> ControlState:
        return self._state

    def report(self) -> SensorReport:
        """What ``GET /cameras/{id}/sensor`` answers."""
        pending = {}
        if "framesize" in self.desired and self.generation is None and "framesize" not in self._refused:
            pending["framesize"] = (
                "waiting for the firmware generation (set firmware = '2.x', '3.x' or 'legacy')"
            )
        return SensorReport(
            camera=self.camera_id,
            desired=dict(self.desired),
            actual=dict(self._actual) if self._actual is not None else None,
            generation=self.generation,
            generation_from="learned"
            if self._learned
            else "configured"
            if self.configured_firmware
            else None,
            control=self._state,
            last_apply=self._last_apply,
            last_apply_seconds=self._last_apply_seconds,
            refused=dict(self._refused),
            pending=pending,
            unconfirmed=self._unconfirmed,
            counters=SensorCounters(**vars(self.counters)),
            error=self._error,
        )

    async def restore(self) -> None:
        """Take the values kept in the store over the configured ones (reads a file in a thread)."""
        if self._store is None:
            return
        kept = await anyio.to_thread.run_sync(self._store.load, self.camera_id, self.configured)
        if kept:
            self.desired = merge_sensor(self.desired, kept)
            logger.info("%s: sensor settings kept from the API: %s", self.camera_id, _describe_values(kept))

    # -- events ---------------------------------------------------------------------------------

    def connection_opened(self, frame_size: tuple[int, int] | None) -> None:
        """A new stream connection delivered its first frame (called from the frame path: cheap)."""
        self._pending = (time.monotonic(), frame_size)
        self._confirmed.clear()
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Apply on each connection and check at the interval, until cancelled."""
        try:
            while True:
                wake = self._wake = anyio.Event()
                if self._pending is None:
                    idle = not self.desired or self._state == "none" or not self._connected()
                    with anyio.move_on_after(math.inf if idle else self.check_interval):
                        await wake.wait()
                pending, self._pending = self._pending, None
                if not self.desired or self._state == "none":
                    continue
                try:
                    if pending is not None:
                        await self._on_connection(*pending)
                    elif self._connected():
                        await self._check()
                except Exception as exc:  # a bug: logged, and the camera's stream is not affected
                    self._error = f"internal error: {exc!r}"
                    logger.exception("%s: keeping the sensor settings failed", self.camera_id)
        finally:
            with anyio.CancelScope(shield=True):
                await self._control.aclose()

    # -- the work -------------------------------------------------------------------------------

    async def _on_connection(self, opened: float, frame_size: tuple[int, int] | None) -> None:
        async with self._lock:
            status = await self._status_soon(opened + _CONNECT_RETRY_FOR)
            if status is None:
                return
            self._learn(status, frame_size)
            self._last_framesize = _int(status.get("framesize"))
            if not await self._apply(status, on_connection=True):
                return
            self.counters.applies += 1
            self._last_apply = time.time()
            self._last_apply_seconds = time.monotonic() - opened

    async def _check(self) -> None:
        async with self._lock:
            status = await self._read_status()
            if status is None:
                return
            self.counters.checks += 1
            if self._learned is None and status.get("framesize") == self._last_framesize:
                # The same framesize as at the previous read: the frames now show it.
                self._learn(status, self._frame_size())
            self._last_framesize = _int(status.get("framesize"))
            await self._apply(status, on_connection=False)

    async def _status_soon(self, deadline: float) -> dict[str, StatusValue] | None:
        """``/status``, asking again while the control server refuses until ``deadline``."""
        while True:
            try:
                return await self._status()
            except ControlUnreachable as exc:
                if time.monotonic() + _CONNECT_RETRY_EVERY >= deadline:
                    self._unreachable(exc)
                    return None
            except NotFirmwareError as exc:
                self._no_control(exc)
                return None
            await anyio.sleep(_CONNECT_RETRY_EVERY)

    async def _read_status(self) -> dict[str, StatusValue] | None:
        try:
            return await self._status()
        except ControlUnreachable as exc:
            self._unreachable(exc)
        except NotFirmwareError as exc:
            self._no_control(exc)
        return None

    async def _status(self) -> dict[str, StatusValue]:
        status = await self._control.status()
        if self._state == "unreachable":
            logger.info("%s: camera control server reachable again", self.camera_id)
        self._state = "ok"
        self._error = None
        self._actual = status
        return status

    def _unreachable(self, exc: ControlUnreachable) -> None:
        self.counters.unreachable += 1
        self._error = exc.reason
        if self._state != "unreachable":
            logger.warning(
                "%s: cannot reach the camera's control server (%s); sensor settings wait for the next "
                "connection or check",
                self.camera_id,
                exc.reason,
            )
        self._state = "unreachable"

    def _no_control(self, exc: NotFirmwareError) -> None:
        self._state = "none"
        self._error = exc.reason
        logger.warning(
            "%s: no camera control server at %s (%s): sensor settings are not applied to this camera",
            self.camera_id,
            exc.url,
            exc.reason,
        )

    def _learn(self, status: Mapping[str, StatusValue], frame_size: tuple[int, int] | None) -> None:
        if self._learned is not None:
            return
        learned = generation_from_status(status, frame_size)
        if learned is None:
            return
        self._learned = learned
        configured = self.configured_firmware
        if configured is not None and configured != learned and not self._mismatch_logged:
            self._mismatch_logged = True
            logger.warning(
                "%s: firmware = %r is configured, but the camera's /status and frames say %s: using %s",
                self.camera_id,
                configured,
                learned,
                learned,
            )
        else:
            logger.info("%s: camera firmware generation %s", self.camera_id, learned)

    def _target(self, var: str, want: SensorValue) -> int | None:
        """The number to send for one desired value, or None (refused or pending; noted)."""
        generation = self.generation
        if generation is not None and var not in control_variables(generation):
            self._refuse(var, f"{generation} firmware has no {var}")
            return None
        if var != "framesize":
            return int(want)
        if generation is None:
            return None
        try:
            return framesize_value(str(want), generation)
        except ValueError as exc:
            self._refuse(var, str(exc))
            return None

    def _refuse(self, var: str, reason: str) -> None:
        if self._refused.get(var) == reason:
            return
        self._refused[var] = reason
        self.counters.refused += 1
        logger.error("%s: sensor %s=%s refused: %s", self.camera_id, var, self.desired.get(var), reason)

    async def _apply(self, status: dict[str, StatusValue], *, on_connection: bool) -> bool:
        """Set what differs from ``status`` (and on a connection what status cannot show), then
        read ``/status`` back; False when the control server failed on the way."""
        generation = self.generation
        reported = reported_variables(generation) if generation is not None else frozenset(status)
        changes: dict[str, int] = {}
        drifted: dict[str, tuple[StatusValue | None, int]] = {}
        for var, want in self.desired.items():
            if var in self._refused:
                continue
            target = self._target(var, want)
            if target is None:
                continue
            now = status.get(var)
            if var in status:
                if now == target:
                    continue
            elif var in reported or not on_connection:
                continue  # not shown yet (vflip: only on connections, without read-back)
            changes[var] = target
            if not on_connection and var in self._confirmed:
                drifted[var] = (now, target)
        if drifted:
            self.counters.drift += len(drifted)
            logger.warning(
                "%s: sensor settings changed on the camera, reverting: %s",
                self.camera_id,
                ", ".join(f"{var} {now} -> {target}" for var, (now, target) in drifted.items()),
            )
        try:
            for var, target in changes.items():
                try:
                    await self._control.set(var, target)
                    self.counters.values_set += 1
                except ControlRefused as exc:
                    self._refuse(var, exc.reason)
            if changes:
                status = await self._status()
        except ControlUnreachable as exc:
            self._unreachable(exc)
            return False
        except NotFirmwareError as exc:
            self._no_control(exc)
            return False
        self._confirm(status, changes)
        return True

    def _confirm(self, status: Mapping[str, StatusValue], changes: Mapping[str, int]) -> None:
        unconfirmed = []
        for var, want in self.desired.items():
            if var in self._refused or var not in status:
                continue
            target = self._target(var, want)
            if target is None:
                continue
            if status[var] == target:
                self._confirmed.add(var)
            else:
                unconfirmed.append(var)
        self._unconfirmed = tuple(unconfirmed)
        if changes:
            logger.info("%s: sensor settings applied: %s", self.camera_id, _describe_values(changes))
        if unconfirmed:
            logger.warning(
                "%s: the camera's /status does not show %s as set",
                self.camera_id,
                ", ".join(f"{var}={self.desired[var]}" for var in unconfirmed),
            )

    # -- changes through the API ----------------------------------------------------------------

    async def change(self, var: str, val: int) -> SensorValue | None:
        """Set one variable on the camera now and make it desired (kept in the store).

        A ``framesize`` number is kept as its size name, which needs the firmware generation;
        unknown, the camera still gets the number but it is not kept (returns None).

        Raises:
            ValueError: the value is outside `espdetect.firmware.CONTROL_RANGES`.
            CameraControlError: the camera could not be reached or refused the value.
        """
        async with self._lock:
            kept: SensorValue = val
            if var == "framesize":
                generation = self.generation
                if generation is None:
                    with contextlib.suppress(ControlUnreachable, NotFirmwareError):
                        self._learn(await self._control.status(), self._frame_size())
                    generation = self.generation
                entry = framesize_table(generation).get(val) if generation is not None else None
                if entry is None:
                    await self._control.set(var, val)
                    logger.info(
                        "%s: framesize %d set, but not kept: the camera's firmware generation is not known",
                        self.camera_id,
                        val,
                    )
                    return None
                kept = entry.name
            await self._control.set(var, val)
            self.counters.values_set += 1
            self.desired = merge_sensor(self.desired, {var: kept})
            self._refused.pop(var, None)
            self._confirmed.discard(var)
        if self._store is not None:
            await anyio.to_thread.run_sync(
                self._store.save, self.camera_id, var, kept, self.configured.get(var)
            )
        if self._wake is not None:
            self._wake.set()  # a camera with nothing desired before now has checks to run
        return kept


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
