"""Profiling harness: record a clip, sweep configurations over it, report and recommend.

Part of every install: recording clips, configurations and replays need nothing more. The
sweep, its tables, plots and reports need ``pip install 'espdetect[profile]'`` (pandas,
matplotlib); without them ``import espdetect.profiling`` still works and those names raise
`MissingDependency` saying what to install.

Example:
    >>> from espdetect.profiling import grid, record, recommend, report, sweep
    >>> clip = record("http://192.168.4.1:81/stream", 10, "clips/desk")  # doctest: +SKIP
    >>> configs = grid(skip=[1, 2, 4, "auto"], jpeg_quality=[50, 80])
    >>> results = sweep(clip, configs, "out/desk")  # doctest: +SKIP
    >>> report(results, "out/desk")  # doctest: +SKIP
    >>> print(recommend(results, target_fps=10, min_recall=0.8).summary())  # doctest: +SKIP

A live camera's own frame size and JPEG quality are swept with `sweep_live` (one clip per
camera setting, then the same replays):

    >>> configs = grid(camera_framesize=["QVGA", "VGA"], camera_quality=[10, 30])
    >>> results = sweep_live("http://192.168.4.1:81/stream", configs, "out/live")  # doctest: +SKIP

A large sweep runs on a Ray cluster with ``executor="ray"`` (``pip install 'espdetect[ray]'``;
`espdetect.profiling.ray_sweep`): each node measures one run at a time on all of its CPUs, and
the ``node`` column says where each row was measured:

    >>> results = sweep(clip, configs, "out/desk", executor="ray", ray_address="auto")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from espdetect.exceptions import MissingDependency
from espdetect.profiling.accuracy import Reference as Reference
from espdetect.profiling.accuracy import match_boxes as match_boxes
from espdetect.profiling.calibration import DriftSummary as DriftSummary
from espdetect.profiling.calibration import Interval as Interval
from espdetect.profiling.calibration import SpeedProbe as SpeedProbe
from espdetect.profiling.calibration import drift_summary as drift_summary
from espdetect.profiling.calibration import log_t_interval as log_t_interval
from espdetect.profiling.calibration import t_quantile as t_quantile
from espdetect.profiling.config import CameraSetting as CameraSetting
from espdetect.profiling.config import ProfileConfig as ProfileConfig
from espdetect.profiling.config import grid as grid
from espdetect.profiling.config import grid_from_text as grid_from_text
from espdetect.profiling.config import parse_grid as parse_grid
from espdetect.profiling.detectors import DetectorFactory as DetectorFactory
from espdetect.profiling.detectors import default_factory as default_factory
from espdetect.profiling.estimate import SweepEstimate as SweepEstimate
from espdetect.profiling.estimate import estimate_sweep as estimate_sweep
from espdetect.profiling.events import ClipDetections as ClipDetections
from espdetect.profiling.events import ClipEvent as ClipEvent
from espdetect.profiling.events import DelayStats as DelayStats
from espdetect.profiling.events import EventMatch as EventMatch
from espdetect.profiling.events import EventRun as EventRun
from espdetect.profiling.events import EventScore as EventScore
from espdetect.profiling.events import EventSweep as EventSweep
from espdetect.profiling.events import Visit as Visit
from espdetect.profiling.events import detect_clip as detect_clip
from espdetect.profiling.events import events_toml as events_toml
from espdetect.profiling.events import load_visits as load_visits
from espdetect.profiling.events import plot_event_timeline as plot_event_timeline
from espdetect.profiling.events import replay_events as replay_events
from espdetect.profiling.events import save_visits as save_visits
from espdetect.profiling.events import score_events as score_events
from espdetect.profiling.events import sweep_events as sweep_events
from espdetect.profiling.events import write_yard_clip as write_yard_clip
from espdetect.profiling.export import export_model as export_model
from espdetect.profiling.record import arecord as arecord
from espdetect.profiling.record import record as record
from espdetect.profiling.replay import ClipData as ClipData
from espdetect.profiling.replay import load_clip as load_clip

#: Names that need the [profile] extra (pandas, matplotlib).
_PROFILE_EXTRA = (
    "COLUMNS",
    "BaselineChoice",
    "CameraBusy",
    "CameraSettingLost",
    "Executor",
    "LiveCamera",
    "NoConfigurationMeets",
    "Recommendation",
    "ResultsStore",
    "ReferenceChoice",
    "camera_table",
    "compare_configs",
    "load_results",
    "margin_over_runner_up",
    "plot_accuracy_vs_fps",
    "plot_bandwidth_vs_quality",
    "plot_fps_vs_baseline",
    "plot_latency",
    "plot_stage_times",
    "readable_summary",
    "recommend",
    "report",
    "save_figure",
    "style_summary",
    "summarize",
    "sweep",
    "sweep_clips",
    "sweep_live",
    "write_server_config",
)

try:
    from espdetect.profiling.live import CameraBusy as CameraBusy
    from espdetect.profiling.live import CameraSettingLost as CameraSettingLost
    from espdetect.profiling.live import LiveCamera as LiveCamera
    from espdetect.profiling.live import camera_table as camera_table
    from espdetect.profiling.live import sweep_live as sweep_live
    from espdetect.profiling.plots import plot_accuracy_vs_fps as plot_accuracy_vs_fps
    from espdetect.profiling.plots import plot_bandwidth_vs_quality as plot_bandwidth_vs_quality
    from espdetect.profiling.plots import plot_fps_vs_baseline as plot_fps_vs_baseline
    from espdetect.profiling.plots import plot_latency as plot_latency
    from espdetect.profiling.plots import plot_stage_times as plot_stage_times
    from espdetect.profiling.plots import save_figure as save_figure
    from espdetect.profiling.recommend import NoConfigurationMeets as NoConfigurationMeets
    from espdetect.profiling.recommend import Recommendation as Recommendation
    from espdetect.profiling.recommend import recommend as recommend
    from espdetect.profiling.report import report as report
    from espdetect.profiling.results import COLUMNS as COLUMNS
    from espdetect.profiling.results import ResultsStore as ResultsStore
    from espdetect.profiling.results import compare_configs as compare_configs
    from espdetect.profiling.results import load_results as load_results
    from espdetect.profiling.results import summarize as summarize
    from espdetect.profiling.server_config import write_server_config as write_server_config
    from espdetect.profiling.sweep import BaselineChoice as BaselineChoice
    from espdetect.profiling.sweep import Executor as Executor
    from espdetect.profiling.sweep import ReferenceChoice as ReferenceChoice
    from espdetect.profiling.sweep import sweep as sweep
    from espdetect.profiling.sweep import sweep_clips as sweep_clips
    from espdetect.profiling.tables import margin_over_runner_up as margin_over_runner_up
    from espdetect.profiling.tables import readable_summary as readable_summary
    from espdetect.profiling.tables import style_summary as style_summary
except ModuleNotFoundError as exc:
    if exc.name not in ("pandas", "matplotlib"):
        raise
    _missing = exc.name

    def __getattr__(name: str) -> Any:
        if name in _PROFILE_EXTRA:
            raise MissingDependency(_missing, "profile", f"espdetect.profiling.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CameraSetting",
    "ClipData",
    "ClipDetections",
    "ClipEvent",
    "DelayStats",
    "DetectorFactory",
    "DriftSummary",
    "EventMatch",
    "EventRun",
    "EventScore",
    "EventSweep",
    "Interval",
    "ProfileConfig",
    "Reference",
    "SpeedProbe",
    "SweepEstimate",
    "Visit",
    "arecord",
    "default_factory",
    "detect_clip",
    "drift_summary",
    "estimate_sweep",
    "events_toml",
    "export_model",
    "grid",
    "grid_from_text",
    "load_clip",
    "load_visits",
    "log_t_interval",
    "match_boxes",
    "parse_grid",
    "plot_event_timeline",
    "record",
    "replay_events",
    "save_visits",
    "score_events",
    "sweep_events",
    "t_quantile",
    "write_yard_clip",
    *_PROFILE_EXTRA,
]
