"""Running the espdetect image in tests and benchmarks: `built_image` and `started`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.deploy import image_builder

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BuiltImage:
    """What ``python3 dev.py image`` printed: the base it used and the image reference."""

    engine: str
    base: str
    ref: str
    arch: str
    output: str


def build_image(arch: str | None = None) -> BuiltImage:
    """``python3 dev.py image [--arch ARCH]``, the README's command, run as a user would."""
    cmd = [sys.executable, str(ROOT / "dev.py"), "image", *(["--arch", arch] if arch else [])]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise AssertionError(f"dev.py image failed ({done.returncode}):\n{done.stderr[-4000:]}")
    lines = done.stdout.strip().splitlines()
    bases = [line.removeprefix("base: ") for line in lines if line.startswith("base: ")]
    assert len(bases) == 1, done.stdout
    return BuiltImage(
        engine=image_builder.find_engine(None),
        base=bases[0],
        ref=lines[-1],
        arch=arch or image_builder.host_arch(),
        output=done.stdout + done.stderr,
    )


def engine_or_reason() -> tuple[str | None, str]:
    """The container engine that works here, or why none does."""
    try:
        return image_builder.find_engine(None), ""
    except image_builder.ImageError as exc:
        return None, str(exc)


def run_flags(engine: str) -> list[str]:
    """``run`` options this kind of machine needs (harmless elsewhere): crun cannot set the
    default rlimits inside these sandboxes, runc with explicit ones can."""
    if engine != "podman":
        return []
    flags = ["--ulimit", "nofile=1024:20000", "--ulimit", "nproc=1024:4096"]
    return (["--runtime", "runc"] if shutil.which("runc") else []) + flags


def engine_run(engine: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([engine, *args], capture_output=True, text=True, timeout=timeout)


@dataclass
class Container:
    """A detached container of the image."""

    engine: str
    cid: str

    def logs(self) -> str:
        done = engine_run(self.engine, "logs", self.cid)
        return done.stdout + done.stderr

    def inspect(self) -> dict[str, object]:
        out = json.loads(engine_run(self.engine, "inspect", self.cid).stdout)
        assert isinstance(out, list) and isinstance(out[0], dict)
        return out[0]

    def host_pid(self) -> int:
        return int(engine_run(self.engine, "inspect", "--format", "{{.State.Pid}}", self.cid).stdout)

    def exec(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return engine_run(self.engine, "exec", self.cid, *cmd)

    def running(self) -> bool:
        state = engine_run(self.engine, "inspect", "--format", "{{.State.Running}}", self.cid).stdout
        return state.strip() == "true"

    def stop_with_sigterm(self, grace: float = 10.0) -> tuple[int, float]:
        """Send SIGTERM the way ``stop`` does, SIGKILL after ``grace`` s; (exit code, seconds taken)."""
        started = time.monotonic()
        engine_run(self.engine, "stop", "--time", str(int(grace)), self.cid, timeout=grace + 60)
        taken = time.monotonic() - started
        code = engine_run(self.engine, "inspect", "--format", "{{.State.ExitCode}}", self.cid).stdout
        return int(code), taken


@contextlib.contextmanager
def started(
    image: str,
    engine: str,
    env: Mapping[str, str] = {},
    args: Sequence[str] = (),
    options: Sequence[str] = (),
) -> Iterator[Container]:
    """The image running detached on the host's network (it reaches the emulator on loopback)."""
    cmd = ["run", "--detach", "--network", "host", *run_flags(engine), *options]
    for key, value in env.items():
        cmd += ["--env", f"{key}={value}"]
    done = engine_run(engine, *cmd, image, *args)
    assert done.returncode == 0, done.stderr
    container = Container(engine, done.stdout.strip().splitlines()[-1])
    try:
        yield container
    finally:
        engine_run(engine, "rm", "--force", "--time", "0", container.cid)


def wait_healthy(url: str, alive: Callable[[], bool], timeout: float = 120.0) -> None:
    """Until ``url``/health answers 200; fails at once when ``alive()`` says the server exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not alive():
            raise AssertionError(f"the server behind {url} exited")
        time.sleep(0.25)  # the start-up has no event to wait on from outside the container
    raise AssertionError(f"{url}/health did not answer in {timeout} s")


def image_size(engine: str, ref: str) -> int:
    """Bytes of an image's layers, as the engine counts them."""
    return int(engine_run(engine, "image", "inspect", "--format", "{{.Size}}", ref).stdout)


def require_images() -> bool:
    """CI sets ESPDETECT_REQUIRE_IMAGE=1: there a missing engine fails instead of skipping."""
    return os.environ.get("ESPDETECT_REQUIRE_IMAGE") == "1"


#: The sample photos inside the image (package data of the installed wheel).
IMAGE_PHOTOS = "/opt/espdetect/lib/python3.11/site-packages/espdetect/emulator/photos"


@dataclass(frozen=True)
class DetectRun:
    """``espdetect detect --json`` on the sample photos inside an image."""

    images: list[dict[str, object]]
    onnxruntime: str
    machine: str
    seconds: float

    def labels(self) -> list[list[str]]:
        """Each photo's detected labels, sorted."""
        out = []
        for image in self.images:
            detections = image["detections"]
            assert isinstance(detections, list)
            out.append(sorted(str(d["label"]) for d in detections))
        return out


#: /proc/cpuinfo of a Raspberry Pi 5 (Cortex-A76), two cores. qemu-user 7.2 (Debian bookworm) shows
#: an emulated arm64 program the host's x86 /proc/cpuinfo, on which onnxruntime's CPU detection
#: (cpuinfo) dereferences NULL at import and the process hangs; a real Pi shows this.
PI5_CPUINFO = "\n".join(
    f"processor\t: {n}\nBogoMIPS\t: 108.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
    "lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n"
    "CPU part\t: 0xd0b\nCPU revision\t: 1\n"
    for n in range(2)
)


def emulation_flags(image: BuiltImage) -> list[str]:
    """``run`` options for an image of another architecture: a Pi's /proc/cpuinfo (see above)."""
    if image.arch == image_builder.host_arch():
        return []
    fake = Path(tempfile.gettempdir()) / "espdetect-pi5-cpuinfo"
    fake.write_text(PI5_CPUINFO)
    return ["--volume", f"{fake}:/proc/cpuinfo:ro"]


def detect_in(image: BuiltImage) -> DetectRun:
    start = time.monotonic()
    photos = [f"{IMAGE_PHOTOS}/bus.jpg", f"{IMAGE_PHOTOS}/zidane.jpg"]
    flags = ["--rm", *run_flags(image.engine), *emulation_flags(image), "--platform", f"linux/{image.arch}"]
    done = engine_run(image.engine, "run", *flags, image.ref, "detect", "--json", *photos, timeout=900)
    taken = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    probe = "import onnxruntime, platform; print(onnxruntime.__version__, platform.machine())"
    versions = engine_run(
        image.engine, "run", *flags, "--entrypoint", "python3", image.ref, "-c", probe, timeout=900
    )
    ort, machine = versions.stdout.split()
    parsed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return DetectRun(parsed, ort, machine, taken)


@dataclass(frozen=True)
class BoxMatch:
    """A reference detection and its best same-class counterpart in another run."""

    image: str
    label: str
    iou: float
    confidence_diff: float


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_detections(reference: DetectRun, other: DetectRun) -> list[BoxMatch]:
    """Each reference box against the best box of the same class in ``other`` (IoU 0 when none)."""
    out = []
    for ref_image, other_image in zip(reference.images, other.images, strict=True):
        candidates = other_image["detections"]
        assert isinstance(candidates, list) and isinstance(ref_image["detections"], list)
        for ref in ref_image["detections"]:
            same = [d for d in candidates if d["label"] == ref["label"]]
            best = max(same, key=lambda d: iou(ref["xyxy"], d["xyxy"]), default=None)
            out.append(
                BoxMatch(
                    image=str(ref_image["image"]).rsplit("/", 1)[-1],
                    label=ref["label"],
                    iou=iou(ref["xyxy"], best["xyxy"]) if best else 0.0,
                    confidence_diff=abs(ref["confidence"] - best["confidence"]) if best else 1.0,
                )
            )
    return out
