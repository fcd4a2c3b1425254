"""The engine issue's "done when" list, measured: memory, cameras sharing one model, the install.

The server runs ``.onnx`` models on ONNX Runtime without torch, loads one model for every
camera and lets model calls of all cameras take turns on one detection thread. This measures,
on emulated ESP32-CAMs (VGA, photo scene) with the real model (``--model``, else
``$ESPDETECT_MODEL``, else the bundled int8 YOLOv8n):

* ``rss``: RSS of ``espdetect serve`` with 1, 2, 4 cameras and one annotated viewer each, on
  ``backend = onnxruntime`` and ``backend = ultralytics`` (same file), alternating; targets
  RSS <= 300 MB with one camera, <= +25 MB per further camera;
* ``cameras``: 4 cameras at 30 fps against 1 (each alone saturates the model), detections per
  second summed, SSE viewers (the target: >= 0.9x) and annotated viewers, alternating windows,
  and against Ultralytics' own multi-stream ``predict`` on the same cameras; when the SSE ratio
  is below 0.9 (or with ``--profile``) profiled windows (py-spy) show where the time goes;
* ``install``: a fresh venv, ``pip install .``: no torch, site-packages <= 600 MB.

The machine has 2 cores shared with other work and its speed drifts, so comparisons are made
within one run in alternating windows, and each window records the machine's busy cores.
Writes ``engine.json`` (every raw figure), ``engine.md`` (targets table and sections) and
``logs/`` into ``--out``. See benchmarks/README.md ("Engine benchmarks").

Usage::

    python -m benchmarks.bench_engine --out benchmarks/results/engine [--quick] [--only rss,cameras,install]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Final

import psutil

from benchmarks._engine.cameras_run import cameras_section
from benchmarks._engine.common import Plan
from benchmarks._engine.context import Bench
from benchmarks._engine.install import install_section
from benchmarks._engine.report import write_outputs
from benchmarks._engine.results import Meta, Results
from benchmarks._engine.rss import rss_section
from benchmarks._harness.procs import REPO_ROOT, ProcessGroup
from benchmarks._harness.report import utc_now, versions

logger = logging.getLogger(__name__)

SECTIONS: Final = ("rss", "cameras", "install")


async def run(bench: Bench, only: list[str], profile: bool) -> None:
    """The selected sections in order; a failing section is recorded and the others still run."""
    for name in only:
        bench.note_load(f"{name} start")
        try:
            if name == "rss":
                await rss_section(bench)
            elif name == "cameras":
                await cameras_section(bench, profile)
            else:
                await install_section(bench)
        except Exception as exc:
            logger.exception("section %s failed", name)
            bench.results.errors.append(f"{name}: {exc!r}\n{traceback.format_exc(limit=4)}")
        finally:
            bench.group.close()
        bench.note_load(f"{name} end")


def git_state() -> tuple[str, int]:
    """The commit checked out and the number of changed or untracked files ("" and 0 without git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "", 0
    return commit, len(status.splitlines())  # fmt: skip


def make_meta(model: str, plan: Plan, only: list[str]) -> Meta:
    commit, changed = git_state()
    return Meta(
        started=utc_now(),
        platform=platform.platform(),
        python=platform.python_version(),
        cpus=psutil.cpu_count(),
        model=Path(model).name,
        versions=versions("onnxruntime", "ultralytics", "torch", "numpy", "cv2"),
        load_average_start=[round(x, 2) for x in os.getloadavg()],
        quick=plan.quick,
        only=only,
        command=" ".join(["python -m benchmarks.bench_engine", *sys.argv[1:]]),
        git_commit=commit,
        git_changed_files=changed,
    )


def parse_only(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or any(n not in SECTIONS for n in names):
        raise argparse.ArgumentTypeError(f"expected sections among {','.join(SECTIONS)}, got {text!r}")
    return [n for n in SECTIONS if n in names]


def default_model() -> str:
    from espdetect.detectors.models import resolve_model

    return str(resolve_model(os.environ.get("ESPDETECT_MODEL")))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for engine.json, engine.md, logs/")
    parser.add_argument("--quick", action="store_true", help="short windows, one repeat (about 8 minutes)")
    parser.add_argument("--only", type=parse_only, default=list(SECTIONS), help="e.g. rss,cameras")
    parser.add_argument("--profile", action="store_true", help="profiled windows even when cameras passes")
    parser.add_argument(
        "--fine-pairs",
        type=int,
        default=None,
        help="short 1-/4-camera window pairs (default 8, 4 quick; 0: none)",
    )
    parser.add_argument(
        "--model", default=None, help="the .onnx model (default $ESPDETECT_MODEL, else bundled)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.model = args.model or default_model()
    if not Path(args.model).is_file() or Path(args.model).suffix != ".onnx":
        parser.error(f"expected --model to name an existing .onnx file, got {args.model!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = str(Path(args.model).resolve())
    # The Ultralytics runner reads the model from the environment; Ultralytics must not go online.
    os.environ.update({"ESPDETECT_MODEL": model, "YOLO_OFFLINE": "True", "YOLO_AUTOINSTALL": "False"})
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    plan = Plan.make(args.quick)
    if args.fine_pairs is not None:
        plan = dataclasses.replace(plan, fine_pairs=max(0, args.fine_pairs))
    results = Results(meta=make_meta(model, plan, args.only), plan=plan)
    bench = Bench(plan=plan, model=model, group=ProcessGroup(args.out / "logs"), results=results)
    started = time.time()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(bench, args.only, args.profile))
    finally:
        bench.group.close()
        results.meta.finished = utc_now()
        results.meta.elapsed_s = round(time.time() - started, 1)
        results.meta.load_average_end = [round(x, 2) for x in os.getloadavg()]
        write_outputs(args.out, results)
    return 0 if results.targets and not results.errors else 1


if __name__ == "__main__":
    sys.exit(main())
