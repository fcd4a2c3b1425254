"""Build the espdetect container image: ``python3 dev.py image [--arch amd64|arm64]``.

Standard library only: it runs before any virtual environment exists. What it does:

1. picks the engine: Podman or Docker, whichever answers (a docker client without a daemon does
   not);
2. picks the base: ``--base`` (default the official slim Python image) when it is present or can
   be pulled; otherwise it makes one from Debian's packages with ``debootstrap`` (Debian's Python
   3.11, the same distribution as the slim image) and imports it as ``localhost/espdetect-base``;
3. stages a build context under ``build/image/<arch>/``: the project's wheel and every wheel the
   server needs, downloaded here on the host for the image's platform and Python (a build that
   cannot reach the package index still installs them, with ``--no-index``);
4. builds ``deploy/Containerfile`` (docker format, so Podman keeps the health check).

It prints ``base: REF`` and, as its last line, the image reference.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
#: The image's base by default: the official slim Python image, Debian bookworm like the base made
#: with debootstrap, so the wheels fit either.
DEFAULT_BASE = "docker.io/library/python:3.11-slim-bookworm"
PYTHON_VERSION = "3.11"
DEBIAN_SUITE = "bookworm"
#: The core's dependencies the server never imports (a test runs the server with it blocked):
#: OpenCV serves the emulator and the video-file, V4L2 and RTSP sources, and would add 173 MB.
SERVER_EXCLUDES = frozenset({"opencv-python-headless"})
#: pip's platform tags per architecture: manylinux_2_28 first (onnxruntime's aarch64 wheels need
#: it; with manylinux2014 alone pip falls back to an old release), then the older glibc levels.
PLATFORMS = {
    "amd64": ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "arm64": ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
}
_UNAME = {"amd64": "x86_64", "arm64": "aarch64"}


class ImageError(Exception):
    """Something the build needs is missing; the message says what to do."""


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), text=True, capture_output=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def project_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    if match is None:
        raise ImageError("no version in pyproject.toml")
    return match.group(1)


def server_requirements() -> list[str]:
    """The core's dependencies from pyproject.toml (the one list), less `SERVER_EXCLUDES`."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise ImageError("dev.py image needs Python 3.11 or newer (tomllib)") from None
    deps: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    kept = []
    for dep in deps:
        name = re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0].lower()
        if name not in SERVER_EXCLUDES:
            kept.append(dep)
    return kept


def find_engine(wanted: str | None) -> str:
    """``podman`` or ``docker``: the first whose ``info`` works."""
    tried = []
    for engine in [wanted] if wanted else ["podman", "docker"]:
        if shutil.which(engine) is None:
            tried.append(f"{engine}: not installed")
            continue
        probe = _run([engine, "info"], timeout=60)
        if probe.returncode == 0:
            return engine
        tried.append(f"{engine}: {(probe.stderr.strip().splitlines() or ['info failed'])[-1]}")
    raise ImageError(
        "no container engine works ("
        + "; ".join(tried)
        + "). Install Podman (apt-get install podman runc) or start the Docker daemon."
    )


def image_exists(engine: str, ref: str, arch: str) -> bool:
    probe = _run([engine, "image", "inspect", "--format", "{{.Architecture}}", ref], timeout=60)
    return probe.returncode == 0 and probe.stdout.strip() == arch


def try_pull(engine: str, ref: str, arch: str) -> bool:
    log(f"pulling {ref} ({arch})")
    try:
        pulled = _run([engine, "pull", "--platform", f"linux/{arch}", ref], timeout=120)
    except subprocess.TimeoutExpired:
        log(f"pulling {ref} timed out")
        return False
    if pulled.returncode != 0:
        log(f"cannot pull {ref}: {(pulled.stderr.strip().splitlines() or ['failed'])[-1]}")
    return pulled.returncode == 0


def debian_mirror() -> str:
    """The Debian mirror apt on this machine uses (the base comes from the same place)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(
            r"(?:^deb\s+(?:\[[^\]]*\]\s+)?|^URIs:\s*)(\S+/debian)/?\s", text, re.MULTILINE
        ):
            return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_binfmt(arch: str) -> None:
    """Foreign-architecture programs run through qemu-user-static and binfmt_misc."""
    if arch == host_arch():
        return
    entry = Path(f"/proc/sys/fs/binfmt_misc/qemu-{_UNAME[arch]}")
    if entry.exists() and entry.read_text().startswith("enabled"):
        return
    hint = (
        "apt-get install qemu-user-static binfmt-support; "
        "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
        f"update-binfmts --enable qemu-{_UNAME[arch]}"
    )
    if os.geteuid() != 0 or shutil.which("update-binfmts") is None:
        raise ImageError(f"building for {arch} on {host_arch()} needs qemu emulation: {hint}")
    log(f"enabling qemu-{_UNAME[arch]} emulation")
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=True)
    subprocess.run(["update-binfmts", "--enable", f"qemu-{_UNAME[arch]}"], check=True)
    if not entry.exists():
        raise ImageError(f"qemu-{_UNAME[arch]} emulation is still missing: {hint}")


def make_debian_base(engine: str, arch: str) -> str:
    """A Debian bookworm base with Debian's Python, made with debootstrap and imported."""
    ref = f"localhost/espdetect-base:{DEBIAN_SUITE}-python{PYTHON_VERSION}-{arch}"
    if image_exists(engine, ref, arch):
        return ref
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise ImageError(
            "the base image cannot be pulled and none can be made here: making one needs root and "
            "debootstrap (apt-get install debootstrap), or pass --base with an image you have"
        )
    ensure_binfmt(arch)
    mirror = debian_mirror()
    log(f"making {ref} with debootstrap from {mirror} (about {30 if arch == host_arch() else 90} s)")
    with tempfile.TemporaryDirectory(prefix="espdetect-base-") as tmp:
        root = Path(tmp) / "root"
        cmd = ["debootstrap", "--variant=minbase", f"--arch={arch}", "--include=python3"]
        done = _run([*cmd, DEBIAN_SUITE, str(root), mirror], timeout=1200)
        if done.returncode != 0:
            raise ImageError(f"debootstrap failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        # apt's downloaded lists and packages: the slim image does not carry them either.
        for junk in ("var/cache/apt", "var/lib/apt/lists"):
            for child in (root / junk).glob("*"):
                if child.is_file():
                    child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [engine, "import", "--arch", arch, "--change", 'CMD ["python3"]', "-", ref],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ImageError(f"importing the base failed: {imported.stderr.strip()}")
    return ref


def choose_base(engine: str, base: str, arch: str, explicit: bool) -> str:
    if image_exists(engine, base, arch) or try_pull(engine, base, arch):
        return base
    if explicit:
        raise ImageError(f"the base {base} ({arch}) is neither here nor can it be pulled")
    log(f"making a Debian {DEBIAN_SUITE} base instead of {base}")
    return make_debian_base(engine, arch)


def pip_download(dest: Path, arch: str, requirements: Sequence[str]) -> None:
    """The server's wheels for the image's platform, fetched through the host's pip configuration.

    Fetched into a new folder that replaces ``dest`` only when complete: two versions of one
    package side by side would break the image's install, and the last complete set is what an
    offline rebuild uses.
    """
    fresh = dest.with_name(dest.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(fresh)]
    cmd += ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for tag in PLATFORMS[arch]:
        cmd += ["--platform", tag]
    # Wheels already fetched for this platform are reused rather than downloaded again.
    if dest.is_dir():
        cmd += ["--find-links", str(dest)]
    done = _run([*cmd, *requirements], timeout=1800)
    if done.returncode != 0:
        shutil.rmtree(fresh, ignore_errors=True)
        if any(dest.glob("*.whl")):
            log(f"pip download failed, using the {len(list(dest.glob('*.whl')))} wheels of the last build")
            return
        raise ImageError(f"pip download failed:\n{done.stderr[-3000:]}")
    shutil.rmtree(dest, ignore_errors=True)
    fresh.rename(dest)


def stage_context(arch: str) -> Path:
    """``build/image/<arch>``: the Containerfile, the project's wheel and the server's wheels."""
    context = ROOT / "build" / "image" / arch
    wheels, tools, project = context / "wheels", context / "tools", context / "project"
    log(f"downloading the server's wheels for linux/{arch}, Python {PYTHON_VERSION}")
    pip_download(wheels, arch, server_requirements())
    pip_download(tools, arch, ["pip"])
    # A wheel of this checkout (pure Python, any platform), replaced on every build.
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(project),
            str(ROOT),
        ],
        timeout=600,
    )
    if built.returncode != 0:
        raise ImageError(f"building the espdetect wheel failed:\n{built.stderr[-3000:]}")
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)
    shutil.copy2(DEPLOY / "Containerfile", context / "Containerfile")
    return context


def build(engine: str, context: Path, base: str, arch: str, tag: str) -> None:
    cmd = [engine, "build", "--platform", f"linux/{arch}", "--build-arg", f"BASE={base}"]
    cmd += ["--build-arg", f"PYTHON_VERSION={PYTHON_VERSION}", "--tag", tag]
    if engine == "podman":
        # docker format keeps HEALTHCHECK; chroot isolation builds where rootless or nested
        # containers cannot create namespaces (and anywhere else).
        cmd += ["--format", "docker", "--isolation", "chroot", "--pull=never"]
    log(" ".join(cmd))
    done = subprocess.run([*cmd, "--file", str(context / "Containerfile"), str(context)], stdout=sys.stderr)
    if done.returncode != 0:
        raise ImageError(f"{engine} build failed (exit {done.returncode})")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="dev.py image", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default=None, help="default: this machine's")
    parser.add_argument("--base", default=None, help=f"base image (default {DEFAULT_BASE})")
    parser.add_argument(
        "--engine", choices=["podman", "docker"], default=None, help="default: the one that works"
    )
    parser.add_argument("--tag", default=None, help="image reference (default localhost/espdetect:VERSION)")
    args = parser.parse_args(argv)
    arch = args.arch or host_arch()
    if arch not in PLATFORMS:
        print(f"dev.py image: no image for {arch}; expected one of {', '.join(PLATFORMS)}", file=sys.stderr)
        return 2
    version = project_version()
    suffix = "" if arch == host_arch() else f"-{arch}"
    tag = args.tag or f"localhost/espdetect:{version}{suffix}"
    try:
        engine = find_engine(args.engine)
        if arch != host_arch():
            ensure_binfmt(arch)
        base = choose_base(engine, args.base or DEFAULT_BASE, arch, explicit=args.base is not None)
        print(f"base: {base}", flush=True)
        context = stage_context(arch)
        build(engine, context, base, arch, tag)
    except ImageError as exc:
        print(f"dev.py image: {exc}", file=sys.stderr)
        return 1
    print(tag, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
