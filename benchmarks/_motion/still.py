"""Still scenes through the server: CPU with gating on and off, model calls beyond the keep-alive.

Cases (each a fresh server on a fresh emulated camera, 15 fps VGA, one annotated viewer):

* ``photo``: one still picture with people in it (``bus.jpg``), so boxes are drawn on every
  frame — the costly still scene; run with gating on and off, interleaved over rounds, so the
  ratio is measured against a baseline in the same run;
* ``noise``: the empty yard with sensor noise (every frame's bytes differ, as a real sensor's do);
* ``ramp``: the empty yard darkening by about 90 grey levels over a minute (auto-exposure at
  dusk, much faster than a real dusk) with mild noise.

The keep-alive is 30 s, the server default; a window of ``window`` seconds therefore allows
``1 + window // 30`` keep-alive calls (the first is the call on the first frame).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._motion.served import FPS, VGA, describe, served
from espdetect.emulator import EmulatorConfig
from espdetect.emulator.scene import sample_photo

__all__ = ["StillRow", "still_cases"]

logger = logging.getLogger(__name__)

KEEPALIVE = 30.0
#: Seconds between the viewer's first bytes and the window (the model's first calls, the encoder).
SETTLE = 5.0


@dataclass(frozen=True)
class StillRow:
    """One measured window of one case."""

    case: str
    scene: str
    motion: bool
    round: int
    window_s: float
    #: Server process CPU over the window, % of one core.
    cpu_core_pct: float
    #: Model calls over the whole run (server start to the window's end), and how many of them
    #: the keep-alive made (the first call included); the rest were caused by motion.
    model_calls: int
    keepalive_calls: int
    moving_frames: int
    gated_frames: int
    frames_in: int
    frames_out: int
    viewer_kbytes_per_s: float

    @property
    def beyond_keepalive(self) -> int:
        return self.model_calls - self.keepalive_calls


def _cameras(window: float) -> dict[str, EmulatorConfig]:
    # The yard's still stretch outlasts the run, so no one walks in.
    still_seconds = SETTLE + window + 60.0
    return {
        "photo": EmulatorConfig(fps=FPS, size=VGA, scene=sample_photo("bus.jpg"), max_stream_clients=2),
        "noise": EmulatorConfig(fps=FPS, size=VGA, scene="yard", still_seconds=still_seconds, noise=6),
        "ramp": EmulatorConfig(
            fps=FPS, size=VGA, scene="yard", still_seconds=120.0, noise=3, brightness_ramp=-100.0
        ),
    }


def _measure(
    case: str, camera: EmulatorConfig, motion: bool, rnd: int, window: float, logs: Path
) -> StillRow:
    flag = "--motion" if motion else "--no-motion"
    name = f"still-{case}-{'on' if motion else 'off'}-{rnd}"
    with served(camera, [flag, "--keepalive", str(KEEPALIVE)], logs, name) as srv, srv.viewer() as viewer:
        time.sleep(SETTLE)
        cpu0, bytes0, t0 = srv.cpu_seconds(), viewer.bytes, time.perf_counter()
        time.sleep(window)
        cpu1, bytes1, t1 = srv.cpu_seconds(), viewer.bytes, time.perf_counter()
        counters = srv.counters()
    elapsed = t1 - t0
    row = StillRow(
        case=case,
        scene=describe(camera),
        motion=motion,
        round=rnd,
        window_s=round(elapsed, 2),
        cpu_core_pct=round(100.0 * (cpu1 - cpu0) / elapsed, 2),
        model_calls=counters.frames_detected,
        keepalive_calls=counters.keepalive_calls,
        moving_frames=counters.moving_frames,
        gated_frames=counters.gated_frames,
        frames_in=counters.frames_in,
        frames_out=counters.frames_out,
        viewer_kbytes_per_s=round((bytes1 - bytes0) / elapsed / 1000.0, 1),
    )
    logger.info("%s: %.1f %% of a core, %d model calls (%d keep-alive)", name, row.cpu_core_pct,
                row.model_calls, row.keepalive_calls)  # fmt: skip
    return row


def still_cases(rounds: int, window: float, long_window: float, logs: Path) -> list[StillRow]:
    """``photo`` on/off for ``rounds`` interleaved rounds of ``window`` s; ``noise`` and ``ramp``
    once each, gating on, for ``long_window`` s (long enough for keep-alives to fall due)."""
    cameras = _cameras(long_window)
    rows = []
    for rnd in range(rounds):
        order = (True, False) if rnd % 2 == 0 else (False, True)
        for motion in order:
            rows.append(_measure("photo", cameras["photo"], motion, rnd, window, logs))
    for case in ("noise", "ramp"):
        rows.append(_measure(case, cameras[case], True, 0, long_window, logs))
    return rows
