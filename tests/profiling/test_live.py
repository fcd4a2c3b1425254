"""Live sweeps of the camera's own settings against the emulator, over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("pandas", reason="profiling sweeps need pandas: pip install 'espdetect[profile]'")

from espdetect.emulator import EmulatorConfig, EmulatorThread, Fault, FaultKind
from espdetect.exceptions import ConfigurationError
from espdetect.frame import jpeg_size
from espdetect.profiling.config import CameraSetting, ProfileConfig, grid, parse_grid
from espdetect.profiling.live import CameraBusy, LiveCamera, camera_table, sweep_live
from espdetect.profiling.replay import load_clip
from espdetect.profiling.sweep import best_camera

from ._squares import SquareFactory

SIZES = {"QQVGA": (160, 120), "QVGA": (320, 240)}


@pytest.fixture
def emulator() -> Iterator[EmulatorThread]:
    # The OV2640 model: rates per size and quality, bad frames after each size change.
    cfg = EmulatorConfig(fps=None, framesize=5, quality=12, sensor_model="ov2640", loop_frames=40)
    with EmulatorThread(cfg) as emu:
        yield emu


def _status(emu: EmulatorThread) -> tuple[int, int]:
    status = httpx.get(emu.status_url, timeout=5).json()
    return status["framesize"], status["quality"]


def _grid() -> list[ProfileConfig]:
    return grid(model="squares.pt", camera_framesize=["QQVGA", "QVGA"], camera_quality=[10, 30])


def _check_clips(out: Path, settings: list[CameraSetting]) -> None:
    for setting in settings:
        clip = load_clip(out / "clips" / setting.label)
        assert setting.framesize is not None
        assert {jpeg_size(f.jpeg) for f in clip.frames} == {SIZES[setting.framesize]}, setting


def test_camera_axes_parse_validate_and_key() -> None:
    assert parse_grid("framesize=qqvga,320x240 camera_q=10") == {
        "camera_framesize": ["QQVGA", "QVGA"],
        "camera_quality": [10],
    }
    cfg = ProfileConfig(model="m.onnx", camera_framesize="svga", camera_quality=10)
    assert cfg.camera == CameraSetting("SVGA", 10) and cfg.key.endswith("-q80-camSVGA-camq10")
    assert ProfileConfig(model="m.onnx").key.endswith("-q80")  # camera unchanged: keys as before
    with pytest.raises(ConfigurationError, match="camera_quality"):
        ProfileConfig(model="m.onnx", camera_quality=2)  # below 4 the OV2640 sends broken frames
    with pytest.raises(ConfigurationError, match="frame size"):
        ProfileConfig(model="m.onnx", camera_framesize="8")
    assert best_camera(c.camera for c in _grid()) == CameraSetting("QVGA", 10)


def test_live_sweep_records_each_camera_setting_and_restores_the_camera(
    emulator: EmulatorThread, squares: SquareFactory, tmp_path: Path
) -> None:
    before = _status(emulator)
    df = sweep_live(
        emulator.stream_url, _grid(), tmp_path, seconds=1.0, control_url=emulator.control_url,
        repeats=1, progress=False, detector_factory=squares, probe_calls=0,
    )  # fmt: skip
    assert _status(emulator) == before
    assert df.attrs["lost"] == {} and set(df["status"]) == {"ok"} and len(df) == 4
    assert set(df["accuracy_basis"]) == {"per frame"}  # the emulator: clips correspond frame by frame
    # The settle step read the size changes' bad frames; no clip holds one of the wrong size.
    assert emulator.stats.bad_frames >= 3
    settings = [CameraSetting(f, q) for f in SIZES for q in (10, 30)]
    _check_clips(tmp_path, settings)

    table = camera_table(df).set_index(["camera_framesize", "camera_quality"])
    size = table["camera_bytes_per_frame"]
    assert size["QQVGA", 10] < size["QVGA", 10] and size["QQVGA", 30] < size["QVGA", 30]
    assert size["QVGA", 30] < size["QVGA", 10] and size["QQVGA", 30] < size["QQVGA", 10]
    # The reference is the largest, best setting: its own recall is 1.
    assert table.loc[("QVGA", 10), "recall"] == pytest.approx(1.0)
    assert (df["reference_key"] == df["reference_key"].iloc[0]).all()
    assert df["reference_key"].iloc[0].endswith("-camQVGA-camq10")


def test_a_reboot_mid_recording_is_recorded_again_never_kept(
    emulator: EmulatorThread, squares: SquareFactory, tmp_path: Path
) -> None:
    camera = LiveCamera(
        emulator.stream_url, control_url=emulator.control_url, timeout=3.0, attempts=2, reboot_wait=10.0
    )
    reboots: list[CameraSetting] = []

    def reboot_once(setting: CameraSetting) -> None:
        if setting == CameraSetting("QQVGA", 30) and not reboots:
            reboots.append(setting)
            # The next stream (the recording) is cut after 10 frames; the camera comes back
            # at its boot settings (QVGA, quality 12).
            emulator.set_faults([Fault(FaultKind.REFUSE, frames=10, seconds=0.5)])

    camera.before_recording = reboot_once
    before = _status(emulator)
    df = sweep_live(
        emulator.stream_url, _grid(), tmp_path, seconds=1.0, camera=camera, repeats=1,
        progress=False, detector_factory=squares, probe_calls=0,
    )  # fmt: skip
    assert reboots and emulator.stats.boots == 2
    assert df.attrs["lost"] == {} and set(df["status"]) == {"ok"} and len(df) == 4
    _check_clips(tmp_path, [CameraSetting(f, q) for f in SIZES for q in (10, 30)])
    assert load_clip(tmp_path / "clips" / "QQVGA-q30").duration_s > 0.7
    assert _status(emulator) == before


def test_a_setting_lost_to_a_reboot_is_reported_and_recorded_when_resumed(
    emulator: EmulatorThread, squares: SquareFactory, tmp_path: Path
) -> None:
    camera = LiveCamera(
        emulator.stream_url, control_url=emulator.control_url, timeout=3.0, attempts=1, reboot_wait=10.0
    )

    def reboot(setting: CameraSetting) -> None:
        if setting == CameraSetting("QQVGA", 10):
            emulator.set_faults([Fault(FaultKind.REFUSE, frames=5, seconds=0.5)])

    camera.before_recording = reboot
    options: dict[str, Any] = {"repeats": 1, "progress": False, "detector_factory": squares, "probe_calls": 0}
    df = sweep_live(emulator.stream_url, _grid(), tmp_path, seconds=1.0, camera=camera, **options)
    assert list(df.attrs["lost"]) == ["QQVGA-q10"]
    assert len(df) == 3 and "QQVGA" not in set(df[df["camera_quality"] == 10]["camera_framesize"])

    emulator.set_faults([])
    url = emulator.control_url
    resumed = sweep_live(emulator.stream_url, _grid(), tmp_path, seconds=1.0, control_url=url, **options)
    assert resumed.attrs["lost"] == {} and len(resumed) == 4 and set(resumed["status"]) == {"ok"}
    _check_clips(tmp_path, [CameraSetting(f, q) for f in SIZES for q in (10, 30)])


def test_a_busy_camera_is_refused_clearly(emulator: EmulatorThread, tmp_path: Path) -> None:
    async def hold_and_sweep() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", emulator.stream_port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: cam\r\n\r\n")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # our stream runs: the camera is taken
        try:
            camera = LiveCamera(emulator.stream_url, control_url=emulator.control_url, timeout=1.0)
            with pytest.raises(CameraBusy, match="another client holds it"):
                await camera.arecord_all([CameraSetting("QQVGA", 10)], 1.0, tmp_path / "clips")
        finally:
            writer.close()

    before = _status(emulator)
    asyncio.run(hold_and_sweep())
    assert _status(emulator) == before


def test_ctrl_c_restores_the_camera(emulator: EmulatorThread, tmp_path: Path) -> None:
    camera = LiveCamera(emulator.stream_url, control_url=emulator.control_url, timeout=3.0)

    def interrupt(setting: CameraSetting) -> None:
        if setting == CameraSetting("QQVGA", 30):
            raise KeyboardInterrupt

    camera.before_recording = interrupt
    before = _status(emulator)
    with pytest.raises(KeyboardInterrupt):
        camera.record_all([CameraSetting("QQVGA", 10), CameraSetting("QQVGA", 30)], 1.0, tmp_path)
    assert _status(emulator) == before
