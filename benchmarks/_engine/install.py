"""Section ``install``: a fresh virtual environment, ``pip install .`` (the core, no extras).

The working tree as a fresh clone plus uncommitted work has it (``git ls-files`` tracked and
untracked-but-not-ignored files) is copied to a temporary folder and installed from there, so
the build writes nothing into the shared checkout (``build/``, ``*.egg-info``). Then, in that
environment: the size of site-packages (``du``), each distribution's installed size (from its
RECORD), whether ``import torch`` fails, whether the server and the ONNX Runtime detector import,
and a smoke test (the bundled model loaded through ``open_detector()`` and run on one frame).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from benchmarks._engine.context import Bench
from benchmarks._engine.results import InstallResult
from benchmarks._harness.procs import REPO_ROOT

__all__ = ["install_section"]

logger = logging.getLogger(__name__)

#: Run inside the fresh environment: installed MB per distribution, from each RECORD.
_SIZES: Final = """
import importlib.metadata as md, json
sizes = {}
for dist in md.distributions():
    total = 0
    for f in dist.files or ():
        try:
            total += f.locate().stat().st_size
        except OSError:
            pass
    sizes[dist.metadata["Name"]] = round(total / 2**20, 1)
print(json.dumps(sizes))
"""
_SMOKE: Final = """
import numpy as np
from espdetect.detectors.factory import open_detector
detector = open_detector()
detections = detector.detect(np.zeros((480, 640, 3), np.uint8))
print(detector.info.backend, detector.info.model.rsplit("/", 1)[-1], len(detections.xyxy))
"""
_IMPORTS: Final = "import espdetect.server.app, espdetect.detectors.onnx"


def _copy_tree(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = REPO_ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _run(argv: list[str], log: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}[exit {done.returncode}]\n\n")
    return done


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise RuntimeError(f"expected a site-packages folder under {venv}, found none")
    return found[0]


def _du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return round(int(out.split()[0]) / 2**20, 1)


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else ""


def measure(tmp: Path, log: Path) -> InstallResult:
    src, venv = tmp / "src", tmp / "venv"
    _copy_tree(src)
    _run([sys.executable, "-m", "venv", str(venv)], log, 300.0)
    python = str(venv / "bin" / "python")
    t0 = time.perf_counter()
    installed = _run([python, "-m", "pip", "install", "--no-input", str(src)], log, 1200.0)
    install_s = round(time.perf_counter() - t0, 1)
    sizes = json.loads(_run([python, "-c", _SIZES], log, 120.0).stdout or "{}")
    torch = _run([python, "-c", "import torch"], log, 120.0)
    imports = _run([python, "-c", _IMPORTS], log, 120.0)
    smoke = _run([python, "-c", _SMOKE], log, 300.0)
    version = _run([python, "-c", "import platform; print(platform.python_version())"], log, 60.0)
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:10]
    return InstallResult(
        python=version.stdout.strip(),
        install_s=install_s,
        install_ok=installed.returncode == 0,
        site_packages_mb=_du_mb(_site_packages(venv)),
        top_packages=[(name, mb) for name, mb in top],
        distributions=len(sizes),
        torch_import_fails=torch.returncode != 0,
        torch_import_error=_error_line(torch),
        espdetect_imports=imports.returncode == 0,
        espdetect_import_error=_error_line(imports),
        smoke=smoke.stdout.strip() if smoke.returncode == 0 else f"failed: {_error_line(smoke)}",
    )


async def install_section(bench: Bench) -> None:
    log = bench.group.log_dir / "install.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("", encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="espdetect-install-") as tmp:
        result = await asyncio.to_thread(measure, Path(tmp), log)
    bench.results.install = result
    logger.info("install: %.0f MB site-packages, torch import fails: %s", result.site_packages_mb,
                result.torch_import_fails)  # fmt: skip
    top = ", ".join(f"{name} {mb:.0f}" for name, mb in result.top_packages[:5])
    bench.target(
        "install",
        "fresh venv, pip install . (core): no torch, site-packages size",
        f"{result.site_packages_mb:.0f} MB, torch importable: {not result.torch_import_fails}; "
        f"largest (MB): {top}",
        "no torch, <= 600 MB",
        result.install_ok and result.torch_import_fails and result.site_packages_mb <= 600.0,
        f"python {result.python}, {result.distributions} distributions, install {result.install_s:g} s; "
        f"server + onnx detector import: {result.espdetect_imports}; smoke test: {result.smoke}",
    )
