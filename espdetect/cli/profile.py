"""``espdetect profile``: sweep configurations over a recorded clip (or a live camera), report, recommend."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espdetect.cli._command import Command
from espdetect.exceptions import ConfigurationError

if TYPE_CHECKING:
    import pandas as pd

    from espdetect.profiling.config import ProfileConfig
    from espdetect.profiling.recommend import Recommendation
    from espdetect.profiling.sweep import BaselineChoice, ReferenceChoice

__all__ = ["COMMAND", "run"]

_DEFAULT_GRID = "skip=1,2,4,auto quality=50,80"
#: calibration.DEFAULT_DRIFT_THRESHOLD, without importing numpy when the command line starts.
_DRIFT_THRESHOLD = 0.10

_EPILOG = """\
grid syntax: space-separated AXIS=V1,V2,... items; every combination is measured.
  axes: model, imgsz, half, skip (N or auto), quality (1-100), conf (0-1), reduce (1,2,4,8,auto),
        motion (on,off), keepalive (seconds), tracking (on,off)
  camera axes (--live only): camera_framesize (QQVGA, QVGA, VGA, SVGA, ... or WxH),
        camera_quality (the camera's JPEG quality 4-63, lower is better), e.g.
    espdetect profile --live http://192.168.4.1:81/stream --out out/live --seconds 5 \
      --grid "camera_framesize=QVGA,VGA,SVGA camera_quality=10,30" --write-config espdetect.toml
  give --grid several times to measure the union of several grids, e.g. a fixed-size ONNX
  model at 640 plus an untrained yolov8n.yaml over sizes (speed only):
    espdetect profile clips/desk --out out/desk \\
      --grid "model=yolov8n.onnx skip=1,2,4,auto quality=50,80" \\
      --grid "model=yolov8n.yaml imgsz=320,640 skip=1,4" --report
  on a Ray cluster (ray start on every node; model files at the same paths on each), the runs
  spread over the nodes, one at a time per node; results.csv's node column says where:
    espdetect profile clips/desk --out out/desk --ray-address auto
"""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clip", type=Path, nargs="?", default=None, help="clip folder (or --live URL)")
    _add_live_arguments(parser)
    parser.add_argument(
        "--grid",
        action="append",
        default=None,
        help=f'configurations, e.g. "skip=1,2,4,auto imgsz=320,640" (default "{_DEFAULT_GRID}")',
    )
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        help="model for grids that name none (repeatable; default $ESPDETECT_MODEL or yolov8n.pt)",
    )
    parser.add_argument("--out", required=True, type=Path, help="sweep folder (resumed when it exists)")
    parser.add_argument("--mode", choices=("fast", "realtime"), default="fast", help="replay mode (fast)")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per configuration (3)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up frames before each run (2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run order (0)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N (cpu)")
    parser.add_argument(
        "--reference",
        default="auto",
        help='accuracy reference: "auto", "none", or a config such as "model=m.pt imgsz=640"',
    )
    parser.add_argument(
        "--busy-threshold",
        type=float,
        default=50.0,
        help="measure a run again when other processes used more CPU %% than this meanwhile (50)",
    )
    parser.add_argument("--busy-retries", type=int, default=1, help="extra measurements allowed per run (1)")
    parser.add_argument(
        "--baseline",
        default="auto",
        help='configuration replayed alongside every run for fps_vs_baseline: "auto" (the first '
        'one; none in realtime mode), "none" (about half the time), a config key of the grid, or a '
        'config such as "skip=4 quality=50"',
    )
    parser.add_argument(
        "--drift-threshold",
        type=float,
        default=_DRIFT_THRESHOLD,
        help="flag a run when the machine's speed probe moved by more than this fraction during it "
        f"({_DRIFT_THRESHOLD:g})",
    )
    parser.add_argument(
        "--rerun-drifted",
        action="store_true",
        help="measure flagged runs again (up to 2 times), keeping the steadiest",
    )
    parser.add_argument("--fresh", action="store_true", help="discard results already in --out")
    _add_ray_arguments(parser)
    _add_output_arguments(parser)


def _add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        default=None,
        help="measure the runs on a Ray cluster, each node one run at a time on all its CPUs: "
        '"local" (a new Ray in this process), "auto" (the cluster started on this machine), '
        "HOST:PORT or ray://HOST:PORT; the nodes need the model files at the same paths "
        "(needs espdetect[ray])",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", action="store_true", help="write a report into --out")
    parser.add_argument("--format", choices=("html", "markdown"), default="html", help="report format")
    parser.add_argument(
        "--target-fps", type=float, default=None, help="default: the clip's camera fps (--live: none)"
    )
    parser.add_argument("--max-latency-ms", type=float, default=None, help="p95 latency limit")
    parser.add_argument("--min-recall", type=float, default=None, help="least displayed recall (0-1)")
    parser.add_argument("--write-config", type=Path, default=None, help="write a server TOML here")
    parser.add_argument("--camera-url", default=None, help="camera URL for --write-config")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_live_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--live",
        metavar="URL",
        default=None,
        help="profile a live ESP32-CAM stream instead of a clip: a clip per camera setting of the "
        "grid (camera_framesize, camera_quality); its settings are restored afterwards",
    )
    parser.add_argument(
        "--control-url",
        default=None,
        help="--live: the camera's control server (default: port 80 / stream-1)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="--live: seconds per camera setting (5)")
    parser.add_argument(
        "--firmware",
        choices=("legacy", "2.x", "3.x"),
        default=None,
        help="--live: firmware generation if the camera cannot tell (default: learned)",
    )


def _configs(args: argparse.Namespace) -> list[ProfileConfig]:
    from espdetect.profiling.config import grid_from_text, unique

    texts = args.grid or [_DEFAULT_GRID]
    models = args.model or []
    return unique(c for text in texts for c in grid_from_text(text, models=models))


def _reference(text: str) -> ReferenceChoice:
    from espdetect.profiling.config import grid_from_text

    low = text.strip().lower()
    if low == "auto":
        return "auto"
    if low == "none":
        return None
    configs = grid_from_text(f"skip=1 reduce=1 {text}")
    if len(configs) != 1:
        raise ConfigurationError(f"expected --reference to name one configuration, got {len(configs)}")
    return configs[0]


def _baseline(text: str, configs: list[ProfileConfig]) -> BaselineChoice:
    from espdetect.profiling.config import grid_from_text

    low = text.strip().lower()
    if low == "auto":
        return "auto"
    if low == "none":
        return None
    named = [c for c in configs if c.key == text.strip()]
    if named:
        return named[0]
    # A config without a model takes the grid's first one.
    found = grid_from_text(text, models=[configs[0].model] if configs else [])
    if len(found) != 1:
        raise ConfigurationError(
            f"expected --baseline to name one configuration, got {len(found)}", field="baseline"
        )
    return found[0]


def _print_table(results: pd.DataFrame) -> None:
    from espdetect.profiling import summarize

    summary = summarize(results)
    cols = ["config_key", "fps_output", "fps_vs_baseline", "fps_vs_baseline_ci_low",
            "fps_vs_baseline_ci_high", "fps_output_norm", "latency_ms_p95", "model_calls_per_min",
            "displayed_recall", "displayed_iou", "status"]  # fmt: skip
    cols = [c for c in cols if c in summary.columns and (c == "status" or summary[c].notna().any())]
    with_fps = summary.sort_values("fps_output", ascending=False, na_position="last")
    renamed = {"fps_vs_baseline_ci_low": "ci_low", "fps_vs_baseline_ci_high": "ci_high"}
    table = with_fps[cols].rename(columns=renamed)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="n/a"))


def _print_camera_table(results: pd.DataFrame) -> None:
    from espdetect.profiling import camera_table

    table = camera_table(results)
    if table.empty:
        return
    basis = set(table["accuracy_basis"].dropna())
    print("\ncamera settings (medians over the grid's configurations and repeats):")
    cols = [c for c in table.columns if c != "accuracy_basis" and (table[c].notna().any())]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="n/a"))
    if "indicative" in basis:
        print("(indicative: a live camera's clips show different moments; counts and confidence only)")


def _sweep(args: argparse.Namespace, configs: list[ProfileConfig], options: dict[str, Any]) -> pd.DataFrame:
    from espdetect.profiling import LiveCamera, sweep, sweep_live

    if options["executor"] == "ray":
        from espdetect.profiling.ray_sweep import import_ray

        import_ray()  # says what to install before the estimate or the camera's clips
    if args.live is None:
        if args.clip is None:
            raise ConfigurationError("expected a clip folder or --live URL, got neither", field="clip")
        from espdetect.profiling import estimate_sweep
        from espdetect.profiling.detectors import DetectorCache, default_factory

        # What it will cost, before it starts (a few model calls on the clip); the sweep then
        # uses the detectors the estimate loaded (on Ray, each node loads its own).
        detectors = DetectorCache(default_factory(options["device"]))
        estimate = estimate_sweep(
            args.clip,
            configs,
            repeats=options["repeats"],
            mode=options["mode"],
            warmup=options["warmup"],
            baseline=options["baseline"] is not None,
            reference=options["reference"] is not None,
            detector_factory=detectors.get,
        )
        if options["executor"] == "ray":
            print(f"estimate: {estimate.text} (the Ray nodes share the runs)", flush=True)
            return sweep(args.clip, configs, args.out, **options)
        print(f"estimate: {estimate.text}", flush=True)
        return sweep(args.clip, configs, args.out, detector_factory=detectors.get, **options)
    if args.clip is not None:
        raise ConfigurationError("expected a clip folder or --live URL, got both", field="clip")
    camera = LiveCamera(args.live, control_url=args.control_url, firmware=args.firmware)
    return sweep_live(args.live, configs, args.out, seconds=args.seconds, camera=camera, **options)


def _recommend(args: argparse.Namespace, results: pd.DataFrame, live: bool) -> Recommendation:
    from espdetect.profiling import recommend

    target = args.target_fps
    if target is None and not live:
        target = (results.attrs.get("environment", {}).get("clip") or {}).get("fps") or None
    fps_metric, accuracy_metric = "fps_output", "displayed_recall"
    if live:
        # What a viewer gets live is capped by the camera's rate; a real camera's clips do not
        # correspond frame by frame, so its detection quality is the indicative count ratio.
        fps_metric = "fps_delivered"
        if (results["accuracy_basis"] == "indicative").any():
            accuracy_metric = "count_vs_reference"
    return recommend(
        results,
        target_fps=target,
        max_latency_ms=args.max_latency_ms,
        min_recall=args.min_recall,
        fps_metric=fps_metric,
        accuracy_metric=accuracy_metric,
    )


def run(args: argparse.Namespace) -> int:
    """Sweep, print the recommendation; 0, or 1 when the constraints of --write-config are unmet.

    Raises:
        EspdetectError: a bad grid, reference or clip, or a model that cannot load.
    """
    from espdetect.profiling import drift_summary, margin_over_runner_up, report, write_server_config

    camera_url = args.camera_url or args.live
    if args.write_config is not None and not camera_url:
        raise ConfigurationError("expected --camera-url with --write-config, got none", field="camera_url")
    configs = _configs(args)
    options: dict[str, Any] = dict(
        mode=args.mode,
        repeats=args.repeats,
        warmup=args.warmup,
        seed=args.seed,
        reference=_reference(args.reference),
        device=args.device,
        progress=not args.no_progress,
        resume=not args.fresh,
        busy_threshold=args.busy_threshold,
        busy_retries=args.busy_retries,
        baseline=_baseline(args.baseline, configs),
        drift_threshold=args.drift_threshold,
        rerun_drifted=args.rerun_drifted,
        # An address means the Ray executor.
        executor="local" if args.ray_address is None else "ray",
        ray_address=args.ray_address,
    )
    results = _sweep(args, configs, options)
    _print_table(results)
    live = args.live is not None
    if live:
        _print_camera_table(results)
        for setting, why in results.attrs.get("lost", {}).items():
            print(f"camera setting {setting} lost: {why} (run again to resume)", file=sys.stderr)
    print()
    print(drift_summary(results).sentence)
    rec = _recommend(args, results, live)
    print()
    print(rec.summary())
    margin = margin_over_runner_up(results, rec)
    if margin is not None:
        print(margin)
    print(f"\nresults: {Path(args.out) / 'results.csv'} (and .parquet, environment.json)")
    if args.report:
        path = report(results, args.out, args.format, recommendation=rec)
        print(f"report: {path}")
    if args.write_config is not None:
        if not rec.ok:
            print("espdetect profile: no server config written (constraints not met)", file=sys.stderr)
            return 1
        path = write_server_config(rec, args.write_config, camera_url=camera_url, device=args.device)
        print(f"server config: {path}  (espdetect serve --config {path})")
    return 0


COMMAND = Command(
    name="profile",
    help="sweep frame skip, input size, precision, JPEG quality... over a recorded clip or a live camera",
    description=(
        "Replay CLIP (recorded with 'espdetect record') through every configuration of the "
        "grid with the server's own pipeline code; write results.csv/.parquet, optionally a "
        "report, and print the recommended configuration. With --live URL, the camera's own "
        "frame size and JPEG quality are swept too (a clip per camera setting)."
    ),
    add_arguments=_add_arguments,
    run=run,
    epilog=_EPILOG,
)
