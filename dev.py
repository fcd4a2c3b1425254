#!/usr/bin/env python3
"""Set-up and task runner: the only thing a fresh clone needs is Python 3.10+.

    python3 dev.py demo       # create .venv, install espdetect, run the browser demo
    python3 dev.py test       # create .venv, install espdetect[dev], run the test suite
    python3 dev.py test-core  # the test suite in .venv-core: the core install only (no torch,
                              # no pandas); tests that need an extra skip and say which
    python3 dev.py lab        # JupyterLab on notebooks/ (installs espdetect[notebook])
    python3 dev.py check      # ruff + mypy
    python3 dev.py image      # the server's container image (--arch amd64|arm64), with Podman or
                              # Docker; prints the image reference last (deploy/image.py)

Extra arguments are passed on (``python3 dev.py test -k parser``, ``python3 dev.py demo --port 9000``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
#: The core install plus the test tools: what `pip install espdetect` users have.
CORE_VENV = ROOT / ".venv-core"


def _bin(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin")


def _python(venv: Path) -> Path:
    return _bin(venv) / ("python.exe" if os.name == "nt" else "python")


BIN = _bin(VENV)
PY = _python(VENV)


def _stamp(extras: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return f"{digest}:{extras}"


def ensure_env(extras: str, venv_dir: Path = VENV) -> None:
    """Create the virtual environment and (re)install the project when pyproject.toml changed."""
    if sys.version_info < (3, 10):
        sys.exit(f"espdetect needs Python 3.10 or newer, this is {sys.version.split()[0]}")
    py = _python(venv_dir)
    if not py.exists():
        print(f"[dev] creating virtual environment in {venv_dir.name}/", flush=True)
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    stamp_file = venv_dir / ".espdetect-installed"
    wanted = _stamp(extras)
    if stamp_file.exists() and wanted in stamp_file.read_text().split():
        return
    target = f".[{extras}]" if extras else "."
    print(f"[dev] installing espdetect{'[' + extras + ']' if extras else ''} (first run takes a few minutes)", flush=True)
    subprocess.run([str(py), "-m", "pip", "install", "--upgrade", "pip"], check=True, cwd=ROOT)
    subprocess.run([str(py), "-m", "pip", "install", "-e", target], check=True, cwd=ROOT)
    previous = stamp_file.read_text().split() if stamp_file.exists() else []
    stamp_file.write_text("\n".join([s for s in previous if s.split(":")[0] == wanted.split(":")[0]] + [wanted]))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    task, rest = argv[0], argv[1:]
    env = dict(os.environ)
    # Ultralytics must never pip-install packages by itself at run time.
    env.setdefault("YOLO_AUTOINSTALL", "False")
    if task == "demo":
        ensure_env("")
        return subprocess.call([str(BIN / "espdetect"), "demo", *rest], cwd=ROOT, env=env)
    if task == "test":
        ensure_env("dev")
        return subprocess.call([str(PY), "-m", "pytest", *rest], cwd=ROOT, env=env)
    if task == "test-core":
        ensure_env("test", CORE_VENV)
        return subprocess.call([str(_python(CORE_VENV)), "-m", "pytest", *rest], cwd=ROOT, env=env)
    if task == "lab":
        ensure_env("notebook")
        return subprocess.call([str(BIN / "jupyter"), "lab", "notebooks", *rest], cwd=ROOT, env=env)
    if task == "check":
        ensure_env("dev")
        paths = ["espdetect", "tests", "benchmarks", "deploy"]
        rc = subprocess.call([str(PY), "-m", "ruff", "check", *paths], cwd=ROOT)
        rc |= subprocess.call([str(PY), "-m", "ruff", "format", "--check", *paths], cwd=ROOT)
        rc |= subprocess.call([str(PY), "-m", "mypy"], cwd=ROOT)
        return rc
    if task == "image":
        sys.path.insert(0, str(ROOT / "deploy"))
        import image

        return image.main(rest)
    if task == "run":
        ensure_env("")
        return subprocess.call([str(BIN / "espdetect"), *rest], cwd=ROOT, env=env)
    print(f"unknown task {task!r}; expected demo, test, test-core, lab, check, image or run", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
