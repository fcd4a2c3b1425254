"""The container image's figures: added size and its breakdown, the server's memory inside the
container against the same server outside it, SIGTERM to exit, and (``--arm64``) the arm64 image's
detections against the amd64 image's under qemu.

    python -m benchmarks.bench_image --out benchmarks/results/image [--arm64] [--rounds 2] [--seconds 20]

Writes ``results.json`` and ``summary.md`` to ``--out``. Needs Podman or Docker (and
root with debootstrap where base images cannot be pulled, as ``dev.py image`` explains).

Memory is compared with one camera (the emulator, VGA at 15 fps, people in view), one annotated
viewer and one detections subscriber: inside and outside runs alternate, so both see the same
machine. Outside, the server runs in a virtual environment made from the very wheels the image
installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from benchmarks._harness.report import utc_now, versions
from espdetect.emulator import EmulatorConfig, EmulatorThread
from tests._lab import free_port
from tests.deploy import image_builder
from tests.deploy.container import (
    BuiltImage,
    build_image,
    detect_in,
    emulation_flags,
    engine_run,
    image_size,
    match_detections,
    run_flags,
    started,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parent.parent
SITE = "/opt/espdetect/lib/python3.11/site-packages"

_BREAKDOWN = f"""
import os, re, json
site = {SITE!r}
sizes = {{}}
for name in os.listdir(site):
    key = re.sub(r"(-[0-9].*)?\\.(dist-info|libs)$", "", name).lower().replace("_", "-")
    total = 0
    for folder, _, files in os.walk(os.path.join(site, name)):
        total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)
    if os.path.isfile(os.path.join(site, name)):
        total = os.lstat(os.path.join(site, name)).st_size
    sizes[key] = sizes.get(key, 0) + total
print(json.dumps(sizes))
"""


def size_breakdown(image: BuiltImage) -> dict[str, object]:
    flags = ["--rm", *run_flags(image.engine), *emulation_flags(image), "--platform", f"linux/{image.arch}"]
    flags += ["--entrypoint", "python3"]
    done = engine_run(image.engine, "run", *flags, image.ref, "-c", _BREAKDOWN, timeout=600)
    packages: dict[str, int] = json.loads(done.stdout)
    top = dict(sorted(packages.items(), key=lambda kv: -kv[1]))
    total, base = image_size(image.engine, image.ref), image_size(image.engine, image.base)
    return {
        "image_bytes": total,
        "base_bytes": base,
        "added_bytes": total - base,
        "site_packages_bytes": sum(packages.values()),
        "packages_mb": {k: round(v / 1e6, 1) for k, v in top.items() if v >= 1e6},
        "base": image.base,
    }


def _viewers(url: str, camera: str, stop: threading.Event) -> list[threading.Thread]:
    def pull(path: str) -> None:
        while not stop.is_set():
            try:
                with httpx.stream("GET", f"{url}{path}", timeout=30.0) as response:
                    for _ in response.iter_raw():
                        if stop.is_set():
                            return
            except httpx.HTTPError:
                time.sleep(0.5)

    threads = [
        threading.Thread(target=pull, args=(p,), daemon=True)
        for p in (
            f"/cameras/{camera}/detect",
            f"/cameras/{camera}/detections",
        )
    ]
    for thread in threads:
        thread.start()
    return threads


def _sample_rss(pid: int, url: str, warmup: float, seconds: float) -> dict[str, float]:
    stop = threading.Event()
    threads = _viewers(url, "cam", stop)
    time.sleep(warmup)
    process = psutil.Process(pid)
    before = httpx.get(f"{url}/stats").json()["cameras"]["cam"]
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(process.memory_info().rss / 1e6)
        time.sleep(0.5)
    after = httpx.get(f"{url}/stats").json()["cameras"]["cam"]
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    return {
        "rss_mb_median": round(statistics.median(samples), 1),
        "rss_mb_max": round(max(samples), 1),
        "frames_detected": float(after.get("frames_detected", 0) - before.get("frames_detected", 0)),
    }


@contextmanager
def _outside(venv: Path, camera_url: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {"ESPDETECT_CAMERAS": f"cam={camera_url}", "ESPDETECT_PORT": str(port), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [str(venv / "bin" / "espdetect"), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(20)


def outside_venv(arch: str) -> Path:
    """A virtual environment of the wheels the image installed (same versions, same OpenCV-free set)."""
    context = ROOT / "build" / "image" / arch
    venv = ROOT / "build" / "image" / f"venv-{arch}"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    wheels = [
        str(p)
        for p in sorted((context / "wheels").glob("*.whl")) + sorted((context / "project").glob("*.whl"))
    ]
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--no-index", "--no-deps", *wheels], check=True
    )
    return venv


def memory_and_stop(image: BuiltImage, rounds: int, warmup: float, seconds: float) -> dict[str, object]:
    venv = outside_venv(image.arch)
    inside, outside, stops = [], [], []
    with EmulatorThread(EmulatorConfig(fps=15.0, size=(640, 480), loop_frames=30)) as cam:
        for _ in range(rounds):
            port = free_port()
            with started(
                image.ref,
                image.engine,
                {"ESPDETECT_CAMERAS": f"cam={cam.stream_url}", "ESPDETECT_PORT": str(port)},
            ) as box:
                url = f"http://127.0.0.1:{port}"
                wait_healthy(url, box.running)
                inside.append(_sample_rss(box.host_pid(), url, warmup, seconds))
                # With viewers attached again: a stop while streams are open.
                stop_viewers = threading.Event()
                threads = _viewers(url, "cam", stop_viewers)
                time.sleep(2.0)
                code, taken = box.stop_with_sigterm(grace=10.0)
                stop_viewers.set()
                for thread in threads:
                    thread.join(timeout=5)
                stops.append({"exit_code": code, "seconds": round(taken, 3)})
            port = free_port()
            with _outside(venv, cam.stream_url, port) as proc:
                url = f"http://127.0.0.1:{port}"
                wait_healthy(url, lambda: proc.poll() is None)
                outside.append(_sample_rss(proc.pid, url, warmup, seconds))
    ratio = statistics.median(r["rss_mb_median"] for r in inside) / statistics.median(
        r["rss_mb_median"] for r in outside
    )
    return {
        "inside": inside,
        "outside": outside,
        "rss_inside_over_outside": round(ratio, 3),
        "sigterm": stops,
    }


def compare_arm64(amd64: BuiltImage) -> dict[str, object]:
    started_at = time.monotonic()
    arm64 = build_image("arm64")
    build_s = time.monotonic() - started_at
    reference, emulated = detect_in(amd64), detect_in(arm64)
    matches = match_detections(reference, emulated)
    return {
        "arm64_image": arm64.ref,
        "arm64_base": arm64.base,
        "arm64_build_s": round(build_s, 1),
        "onnxruntime": {"amd64": reference.onnxruntime, "arm64": emulated.onnxruntime},
        "machine": {"amd64": reference.machine, "arm64": emulated.machine},
        "detect_s": {"amd64": round(reference.seconds, 1), "arm64_qemu": round(emulated.seconds, 1)},
        "labels": {"amd64": reference.labels(), "arm64": emulated.labels()},
        "matches": [
            {
                "image": m.image,
                "label": m.label,
                "iou": round(m.iou, 4),
                "conf_diff": round(m.confidence_diff, 4),
            }
            for m in matches
        ],
        "arm64_added_bytes": size_breakdown(arm64)["added_bytes"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arm64", action="store_true", help="also build the arm64 image and compare detections"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/espdetect-bench-image"), help="results folder")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    started_at = time.monotonic()
    image = build_image()
    results: dict[str, object] = {
        "when": utc_now(),
        "versions": versions(),
        "engine": image.engine,
        "image": image.ref,
        "build_s": round(time.monotonic() - started_at, 1),
        "size": size_breakdown(image),
        "memory": memory_and_stop(image, args.rounds, args.warmup, args.seconds),
        "arch": image_builder.host_arch(),
    }
    if args.arm64:
        results["arm64"] = compare_arm64(image)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "summary.md").write_text(summary(results))
    print(summary(results))
    return 0


def summary(results: dict[str, object]) -> str:
    size = results["size"]
    memory = results["memory"]
    assert isinstance(size, dict) and isinstance(memory, dict)
    lines = [
        f"# Container image ({results['when']}, {results['engine']})",
        "",
        f"- image {results['image']} on {size['base']}: adds **{size['added_bytes'] / 1e6:.0f} MB** "
        f"(image {size['image_bytes'] / 1e6:.0f} MB, base {size['base_bytes'] / 1e6:.0f} MB)",
        "- site-packages by distribution (MB): "
        + ", ".join(f"{k} {v}" for k, v in size["packages_mb"].items()),
        f"- server RSS inside / outside the container: **{memory['rss_inside_over_outside']}** "
        f"(inside {[r['rss_mb_median'] for r in memory['inside']]} MB, "
        f"outside {[r['rss_mb_median'] for r in memory['outside']]} MB)",
        "- SIGTERM with viewers attached to exit (engine's stop command, its own overhead included): "
        + ", ".join(f"{s['seconds']} s (exit {s['exit_code']})" for s in memory["sigterm"]),
    ]
    arm = results.get("arm64")
    if isinstance(arm, dict):
        matched = arm["matches"]
        lines += [
            f"- arm64 image {arm['arm64_image']} built in {arm['arm64_build_s']} s, adds "
            f"{arm['arm64_added_bytes'] / 1e6:.0f} MB; onnxruntime {arm['onnxruntime']}",
            f"- arm64 detections against amd64: {len(matched)} boxes, min IoU "
            f"{min(m['iou'] for m in matched)}, "
            f"max confidence difference {max(m['conf_diff'] for m in matched)} "
            f"(same labels: {arm['labels']['amd64'] == arm['labels']['arm64']}); "
            f"detect took {arm['detect_s']}",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
