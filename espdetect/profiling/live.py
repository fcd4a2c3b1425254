"""`sweep_live`: profile a live ESP32-CAM, its own frame size and JPEG quality included.

The camera's ``framesize`` and ``quality`` (the firmware's 4..63, lower is better) decide the
bytes each frame costs over Wi-Fi, the frame rate the board delivers and how small an object
the model still finds; no recorded clip can vary them. So for each camera setting of the grid
(`ProfileConfig.camera`), `LiveCamera`:

1. sets it through the control server (``/control``) and reads ``/status`` back;
2. reads frames on a connection of its own until ``settle_frames`` frames in a row have the new
   size (the OV2640 sends a frame of the old size and a few garbled ones after a size change;
   they are read here and thrown away);
3. records ``seconds`` of stream on a fresh connection (`espdetect.profiling.record`), refusing
   any frame of another size, and checks ``/status`` again afterwards: a camera that rebooted
   meanwhile (brownouts are common) is back at its defaults, and the clip is recorded again.

All clips are recorded first (the reference setting, the largest and best, may come last), then
the camera's settings from before the sweep are restored (also on Ctrl-C or an error), and the
clips are replayed through the rest of the grid by the ordinary sweep (`sweep_clips`: the same
baseline pairing, speed probe and results table). A setting that cannot be recorded after
``attempts`` tries is reported as lost (``df.attrs["lost"]``, ``environment.json``); its
clip folder stays incomplete, so resuming the sweep records it again.

The camera serves one stream at a time: the sweep needs it to itself and raises `CameraBusy`
when another client (a browser tab, ``espdetect serve``) holds the stream.

On the emulator every clip starts at frame 0 of the same scene loop, so frames correspond one
to one and accuracy is per frame (``aligned``); a real camera's clips show different moments,
so only detection counts and confidence relative to the reference are reported, marked
indicative (``accuracy_basis``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd

from espdetect.camera_control import CameraControl, CameraControlError, ControlUnreachable, control_url_for
from espdetect.exceptions import ConfigurationError, EspdetectError, SourceUnavailable
from espdetect.firmware import generation_from_status
from espdetect.frame import Frame, decode_jpeg
from espdetect.framesizes import FirmwareGeneration, framesize_value, size_of_framesize
from espdetect.profiling.config import CameraSetting, ProfileConfig, unique
from espdetect.profiling.record import arecord
from espdetect.profiling.replay import ClipData, load_clip
from espdetect.profiling.sweep import sweep_clips
from espdetect.sources.mjpeg_stream import MjpegStreamSource

__all__ = ["CameraBusy", "CameraSettingLost", "LiveCamera", "sweep_live"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What a finished clip folder holds besides the clip: the setting and what was checked.
_MARKER = "camera.json"
#: Frames of the new size read and thrown away after a change: covers the OV2640's stale and
#: garbled frames (one and two on the emulator; users report "a few").
DEFAULT_SETTLE_FRAMES = 5
# The most frames read while waiting for the new size before the setting counts as failed.
_SETTLE_LIMIT = 60


class CameraBusy(EspdetectError):
    """Another client holds the camera's stream; the firmware serves one at a time."""

    def __init__(self, url: str, waited: float) -> None:
        super().__init__(
            f"{url}: the camera's control server answers but its stream did not within {waited:g} s: "
            "another client holds it (a browser tab, espdetect serve, a recorder). The camera serves "
            "one stream at a time; stop the other client and run the sweep again."
        )
        self.url = url
        self.waited = waited


class CameraSettingLost(EspdetectError):
    """A camera setting could not be recorded (the camera rebooted, dropped the stream or sent
    frames of another size); ``reason`` says what happened last."""

    def __init__(self, camera: CameraSetting, reason: str) -> None:
        super().__init__(f"camera setting {camera.label}: {reason}")
        self.camera = camera
        self.reason = reason


class _Retry(Exception):
    """This attempt at a setting failed in a way another attempt may not (a reboot, a drop)."""


@dataclass(frozen=True)
class _Target:
    """A camera setting as the firmware numbers it, and the frame size it gives."""

    camera: CameraSetting
    framesize: int
    quality: int
    size: tuple[int, int]


class LiveCamera:
    """Records one clip per camera setting from an ESP32-CAM running CameraWebServer.

    Args:
        stream_url: the camera's stream, e.g. ``http://192.168.4.1:81/stream``.
        control_url: its control server; default: `control_url_for` the stream URL.
        firmware: the firmware generation when ``/status`` and a frame cannot tell (framesize
            0 or 1 on a 2.x/3.x camera); default: learned from the camera.
        settle_frames: frames of the new size in a row read and dropped before recording.
        timeout: seconds a control request, the stream's first answer or a frame may take.
        attempts: tries per setting before it counts as lost.
        reboot_wait: seconds to wait for a rebooting camera to answer again.

    Example:
        >>> cam = LiveCamera("http://192.168.4.1:81/stream")  # doctest: +SKIP
        >>> clips, lost = cam.record_all([CameraSetting("VGA", 10)], 5.0, "out/live/clips")  # doctest: +SKIP
    """

    def __init__(
        self,
        stream_url: str,
        *,
        control_url: str | None = None,
        firmware: FirmwareGeneration | None = None,
        settle_frames: int = DEFAULT_SETTLE_FRAMES,
        timeout: float = 5.0,
        attempts: int = 3,
        reboot_wait: float = 30.0,
    ) -> None:
        if settle_frames < 1 or attempts < 1 or not timeout > 0 or not reboot_wait >= 0:
            raise ConfigurationError(
                "expected settle_frames >= 1, attempts >= 1, timeout > 0 and reboot_wait >= 0, got "
                f"{settle_frames}, {attempts}, {timeout}, {reboot_wait}"
            )
        self.stream_url = stream_url
        self.control_url = control_url or control_url_for(stream_url)
        self.firmware = firmware
        self.settle_frames = settle_frames
        self.timeout = timeout
        self.attempts = attempts
        self.reboot_wait = reboot_wait
        #: Called with each setting just before its clip is recorded (tests inject faults here).
        self.before_recording: Callable[[CameraSetting], None] | None = None

    def record_all(
        self, cameras: Iterable[CameraSetting], seconds: float, clips_dir: str | Path
    ) -> tuple[dict[CameraSetting, Path], dict[CameraSetting, str]]:
        """Record (or reuse, when already recorded) a clip per setting; the camera is put back after.

        Returns the clip folder of each recorded setting and why each lost one was lost.

        Raises:
            CameraBusy: another client holds the stream.
            SourceUnavailable: the camera cannot be reached.
        """
        return _run(self.arecord_all(list(cameras), seconds, Path(clips_dir)))

    async def arecord_all(
        self, cameras: list[CameraSetting], seconds: float, clips_dir: Path
    ) -> tuple[dict[CameraSetting, Path], dict[CameraSetting, str]]:
        """Async `record_all`."""
        if not seconds > 0:
            raise ConfigurationError(f"expected seconds > 0, got {seconds!r}", field="seconds")
        clips: dict[CameraSetting, Path] = {}
        lost: dict[CameraSetting, str] = {}
        todo = []
        for camera in cameras:
            path = clips_dir / camera.label
            if _finished(path, camera):
                logger.info("camera setting %s: reusing the clip in %s", camera.label, path)
                clips[camera] = path
            else:
                todo.append(camera)
        if not todo:
            return clips, lost
        async with CameraControl(self.control_url, timeout=self.timeout) as control:
            before = await self._status(control)
            await self._check_stream_free()
            saved = {k: int(before[k]) for k in ("framesize", "quality") if isinstance(before.get(k), int)}
            try:
                generation = await self._generation(before)
                for camera in todo:
                    path = clips_dir / camera.label
                    try:
                        await self._record_setting(control, camera, generation, seconds, path)
                        clips[camera] = path
                    except CameraSettingLost as exc:
                        logger.warning("%s", exc)
                        lost[camera] = exc.reason
            finally:
                await self._restore(control, saved)
        return clips, lost

    # -- steps ------------------------------------------------------------------------------

    async def _status(self, control: CameraControl) -> dict[str, Any]:
        try:
            return dict(await control.status())
        except ControlUnreachable as exc:
            raise SourceUnavailable(self.control_url, exc.reason) from None

    async def _check_stream_free(self) -> None:
        """Raise `CameraBusy` when the stream does not answer while the control server does."""
        timeout = httpx.Timeout(self.timeout)
        async with httpx.AsyncClient(timeout=timeout) as client:
            try:
                async with client.stream("GET", self.stream_url) as reply:
                    if reply.status_code != 200:
                        raise SourceUnavailable(
                            self.stream_url, f"expected HTTP 200, got {reply.status_code}"
                        )
            except httpx.TimeoutException:
                raise CameraBusy(self.stream_url, self.timeout) from None
            except httpx.TransportError as exc:
                raise SourceUnavailable(self.stream_url, f"cannot open the stream: {exc!r}") from None

    async def _generation(self, status: Mapping[str, Any]) -> FirmwareGeneration:
        if self.firmware is not None:
            return self.firmware
        frame = await self._one_frame()
        found = generation_from_status(status, frame.size)
        if found is None:
            raise ConfigurationError(
                f"expected to tell the camera's firmware generation from /status and a {frame.size} "
                "frame, got an ambiguous answer (framesize 0 or 1): pass firmware='2.x' or '3.x' "
                "(espdetect profile --live URL --firmware 2.x)",
                field="firmware",
            )
        return found

    async def _one_frame(self) -> Frame:
        async with self._source() as src:
            return await asyncio.wait_for(src.read(), self.timeout)

    def _source(self) -> MjpegStreamSource:
        # No reconnect: a dropped stream must end the attempt, never continue on a rebooted camera.
        # A deep buffer: no frame is dropped, so a clip's frame i is the camera's frame i.
        return MjpegStreamSource(
            self.stream_url, reconnect=False, buffer=1024, stall_timeout=self.timeout,
            connect_timeout=self.timeout,
        )  # fmt: skip

    def _target(
        self, camera: CameraSetting, generation: FirmwareGeneration, status: Mapping[str, Any]
    ) -> _Target:
        framesize = (
            framesize_value(camera.framesize, generation)
            if camera.framesize is not None
            else int(status["framesize"])
        )
        quality = camera.quality if camera.quality is not None else int(status["quality"])
        return _Target(camera, framesize, quality, size_of_framesize(framesize, generation))

    async def _record_setting(
        self,
        control: CameraControl,
        camera: CameraSetting,
        generation: FirmwareGeneration,
        seconds: float,
        path: Path,
    ) -> None:
        reason = "not tried"
        for attempt in range(1, self.attempts + 1):
            try:
                status = await self._status(control)
                target = self._target(camera, generation, status)
                await self._apply(control, target)
                if self.before_recording is not None:
                    self.before_recording(camera)
                await self._record(control, target, seconds, path)
                return
            except (_Retry, CameraControlError, SourceUnavailable, asyncio.TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                logger.warning("camera setting %s, attempt %d: %s", camera.label, attempt, reason)
                await self._wait_for_camera(control)
        raise CameraSettingLost(camera, f"lost after {self.attempts} attempts: {reason}")

    async def _apply(self, control: CameraControl, target: _Target) -> None:
        """Set the camera and read frames until the new size has settled (on a connection of its own)."""
        async with self._source() as src:
            await asyncio.wait_for(src.read(), self.timeout)  # the stream runs: a change shows at once
            await control.set("framesize", target.framesize)
            await control.set("quality", target.quality)
            await self._confirm(control, target)
            good = seen = 0
            while good < self.settle_frames:
                frame = await asyncio.wait_for(src.read(), self.timeout)
                seen += 1
                good = good + 1 if _whole_frame_of(frame, target.size) else 0
                if seen > _SETTLE_LIMIT:
                    raise _Retry(f"no {self.settle_frames} frames of {_wxh(target.size)} in {seen}")

    async def _confirm(self, control: CameraControl, target: _Target) -> None:
        status = await control.status()
        got = (status.get("framesize"), status.get("quality"))
        if got != (target.framesize, target.quality):
            raise _Retry(
                f"expected /status framesize {target.framesize} and quality {target.quality}, got "
                f"{got[0]} and {got[1]} (the camera rebooted?)"
            )

    async def _record(self, control: CameraControl, target: _Target, seconds: float, path: Path) -> None:
        def check(frame: Frame) -> None:
            if frame.size != target.size:
                raise _Retry(f"expected frames of {_wxh(target.size)}, got one of {_wxh(frame.size)}")

        src = self._source()
        await arecord(
            src, seconds, path, progress=False, overwrite=True, first_frame_timeout=self.timeout,
            stall_timeout=self.timeout, check=check,
        )  # fmt: skip
        # The camera reboots to its defaults: settings other than ours now mean a reboot mid-clip.
        await self._confirm(control, target)
        if src.stats.dropped:
            raise _Retry(f"{src.stats.dropped} frames were dropped while recording")
        clip = load_clip(path)
        if clip.duration_s < 0.8 * seconds - 0.5:
            raise _Retry(f"the stream ended after {clip.duration_s:.1f} s of {seconds:g} s")
        marker = {
            "framesize": target.camera.framesize,
            "quality": target.camera.quality,
            "framesize_value": target.framesize,
            "size": list(target.size),
            "frames": len(clip),
            "fps": round(clip.fps, 3),
            "bytes_per_frame": round(sum(len(f.jpeg) for f in clip.frames) / len(clip), 1),
        }
        (path / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        logger.info(
            "camera setting %s: %d frames at %.1f fps, %.0f bytes per frame",
            target.camera.label, len(clip), clip.fps, marker["bytes_per_frame"],
        )  # fmt: skip

    async def _wait_for_camera(self, control: CameraControl) -> None:
        """Wait until the control server answers again (a rebooting camera refuses for a while)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reboot_wait
        while True:
            try:
                await control.status()
                return
            except CameraControlError:
                if loop.time() >= deadline:
                    return
            await asyncio.sleep(0.25)

    async def _restore(self, control: CameraControl, saved: Mapping[str, int]) -> None:
        """Put back the settings from before the sweep; a failure is logged, never raised."""
        await self._wait_for_camera(control)
        for variable, value in saved.items():
            try:
                await control.set(variable, value)
            except (CameraControlError, ValueError) as exc:
                logger.warning("could not restore the camera's %s=%s: %s", variable, value, exc)
        if saved:
            logger.info("camera settings restored: %s", ", ".join(f"{k}={v}" for k, v in saved.items()))


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _whole_frame_of(frame: Frame, size: tuple[int, int]) -> bool:
    """A frame of ``size`` that decodes (the stale frame after a change has the old size)."""
    if frame.size != size:
        return False
    try:
        assert frame.jpeg is not None
        decode_jpeg(frame.jpeg)
    except Exception:  # any decoder failure makes it a bad frame
        return False
    return True


def _finished(path: Path, camera: CameraSetting) -> bool:
    """True when ``path`` holds a clip of ``camera`` recorded to the end and checked."""
    marker = path / _MARKER
    if not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and (data.get("framesize"), data.get("quality")) == tuple(camera)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end: here (Ctrl-C cancels it, so its ``finally`` restores the camera),
    or, under a running event loop (Jupyter), on a private loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="espdetect-live") as pool:
        return pool.submit(asyncio.run, coro).result()


def sweep_live(
    url: str,
    configs: Iterable[ProfileConfig],
    out_dir: str | Path,
    *,
    seconds: float = 5.0,
    control_url: str | None = None,
    camera: LiveCamera | None = None,
    aligned: bool | None = None,
    resume: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """Profile a live camera: a clip per camera setting of ``configs``, then `sweep_clips` over them.

    Args:
        url: the camera's stream URL.
        configs: configurations, usually with ``camera_framesize`` / ``camera_quality`` axes
            (`grid`); those without them record the camera as it is.
        out_dir: the sweep folder; clips go to ``out_dir/clips/<setting>`` and are reused when
            the sweep resumes.
        seconds: clip length per camera setting.
        control_url: the camera's control server; default: `control_url_for` ``url``.
        camera: a `LiveCamera` with other settle, timeout or retry settings (its URLs win).
        aligned: whether frame i of every clip is the same moment; default: True for the
            espdetect emulator (its index page says so), False for a real camera.
        resume: False records every clip again and starts the results afresh.
        options: passed on to `sweep_clips` (``repeats``, ``mode``, ``reference``, ...).

    Returns:
        The results table (`espdetect.profiling.results.COLUMNS`); ``attrs["lost"]`` lists the
        camera settings that could not be recorded and why.

    Raises:
        CameraBusy: another client holds the camera's stream.
        SourceUnavailable: the camera cannot be reached.

    Example:
        >>> configs = grid(camera_framesize=["QVGA", "VGA", "SVGA"], camera_quality=[10, 30])
        >>> df = sweep_live("http://192.168.4.1:81/stream", configs, "out/live", seconds=5)  # doctest: +SKIP
        >>> print(camera_table(df))  # doctest: +SKIP
    """
    config_list = unique(configs)
    if not config_list:
        raise ConfigurationError("expected at least one configuration, got none", field="configs")
    live = camera or LiveCamera(url, control_url=control_url)
    clips_dir = Path(out_dir) / "clips"
    if not resume:
        for setting in {c.camera for c in config_list}:
            with contextlib.suppress(FileNotFoundError):
                (clips_dir / setting.label / _MARKER).unlink()
    cameras = list(dict.fromkeys(c.camera for c in config_list))
    paths, lost = live.record_all(cameras, seconds, clips_dir)
    clips: dict[CameraSetting, ClipData] = {setting: load_clip(path) for setting, path in paths.items()}
    if aligned is None:
        aligned = _is_emulator(live.control_url, live.timeout)
    return sweep_clips(clips, config_list, out_dir, aligned=aligned, lost=lost, resume=resume, **options)


def _is_emulator(control_url: str, timeout: float) -> bool:
    """Whether the camera is espdetect's emulator (its index page names it)."""

    async def ask() -> bool:
        async with httpx.AsyncClient(timeout=timeout) as client:
            try:
                reply = await client.get(control_url.rstrip("/") + "/")
            except httpx.HTTPError:
                return False
            return "espdetect emulator" in reply.text

    return _run(ask())


def camera_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per camera setting: bytes and frames per second from the camera, detection quality.

    Detection quality is the median over the setting's configurations and repeats of
    ``displayed_recall`` (per frame) or of ``count_vs_reference`` and
    ``confidence_vs_reference`` (indicative, a real camera), against the sweep's reference.

    Example:
        >>> print(camera_table(load_results("out/live")).to_string(index=False))  # doctest: +SKIP
    """
    ok = results[(results["status"] == "ok") & (results["camera_framesize"] != "")]
    columns = [
        "camera_size", "camera_bytes_per_frame", "fps_camera", "fps_delivered", "recall",
        "displayed_recall", "count_vs_reference", "confidence_vs_reference", "accuracy_basis",
    ]  # fmt: skip
    if ok.empty:
        return pd.DataFrame(columns=["camera_framesize", "camera_quality", *columns])
    grouped = ok.groupby(["camera_framesize", "camera_quality"], sort=False)
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(ok[c])]
    table = grouped[numeric].median().join(grouped[["camera_size", "accuracy_basis"]].first())
    table = table.reset_index()[["camera_framesize", "camera_quality", *columns]]
    area = table["camera_size"].map(
        lambda s: math.prod(int(v) for v in str(s).split("x")) if "x" in str(s) else 0
    )
    return table.assign(_area=area).sort_values(["_area", "camera_quality"]).drop(columns="_area")
