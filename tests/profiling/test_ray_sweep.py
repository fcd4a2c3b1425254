"""Sweeps on a Ray cluster (`espdetect.profiling.ray_sweep`) against the same sweep measured here.

The cluster is the session's local Ray head (2 CPUs on loopback, `tests._ray`); the model is
the real one (``ESPDETECT_MODEL``), on a few frames of the emulator's clip, so a run takes
seconds. The local and the Ray sweep are measured once for the module and compared in
several tests.
"""

from __future__ import annotations

import importlib.util
import math
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from espdetect.exceptions import ConfigurationError
from espdetect.frame import Frame
from espdetect.profiling.accuracy import ACCURACY_COLUMNS
from espdetect.profiling.config import ProfileConfig, grid
from espdetect.profiling.replay import load_clip
from espdetect.sources.clip import ClipWriter

if TYPE_CHECKING:
    import pandas as pd

    from tests._ray import RayCluster

needs_pandas = pytest.mark.skipif(
    importlib.util.find_spec("pandas") is None,
    reason="profiling sweeps need pandas: pip install 'espdetect[profile]'",
)
#: The first test using `sweeps` starts the cluster and measures both sweeps (about 40 s here).
pytestmark = pytest.mark.timeout(300)

EMULATOR_CLIP = Path(__file__).resolve().parents[2] / "data" / "clips" / "emulator-qvga"
#: Frames of the emulator's clip the sweeps replay: a model call takes 0.1-0.2 s here.
FRAMES = 6
#: Columns that must not depend on where or how fast a run was measured.
SAME_EVERYWHERE = (
    *ACCURACY_COLUMNS,
    "accuracy_status",
    "accuracy_basis",
    "reference_key",
    "count_vs_reference",
    "confidence_vs_reference",
    "class_counts_vs_reference",
    "status",
    "run_order",
    "frames_in",
    "frames_detected",
    "frames_out",
    "baseline_key",
    "camera_size",
    "camera_bytes_per_frame",
)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first `FRAMES` frames of the emulator clip (people walking, found by the real model),
    at their recorded times (15 fps)."""
    if not EMULATOR_CLIP.is_dir():
        pytest.skip("the emulator clip is not in data/")
    clip = load_clip(EMULATOR_CLIP)
    short = tmp_path_factory.mktemp("clips") / "short"
    with ClipWriter(short, source="first frames of emulator-qvga") as writer:
        for rec in clip.frames[:FRAMES]:
            writer.write(
                Frame(seq=rec.seq, source_id="short", jpeg=rec.jpeg, arrival_mono=100.0 + rec.arrival_s)
            )
    return short


def _configs(model: str) -> list[ProfileConfig]:
    return grid(model=model, skip=[1, 2], decode_reduce=1)


#: Arguments both sweeps share: short runs (no warm-up, a short probe), the default noise
#: handling (baseline, busy retries, drift flags) left as it is.
_SETTINGS: dict[str, Any] = dict(repeats=2, warmup=0, probe_calls=2, progress=False, seed=3)


@dataclass
class Sweeps:
    local: pd.DataFrame
    ray: pd.DataFrame
    ray_dir: Path


@pytest.fixture(scope="module")
def sweeps(
    ray_cluster: RayCluster, model_path: str, short_clip: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sweeps]:
    """The same sweep measured here and on the Ray cluster (2 configurations x 2 repeats)."""
    from espdetect.profiling import sweep

    out = tmp_path_factory.mktemp("sweeps")
    configs = _configs(model_path)
    local = sweep(short_clip, configs, out / "local", **_SETTINGS)
    on_ray = sweep(
        short_clip, configs, out / "ray", executor="ray", ray_address=ray_cluster.address, **_SETTINGS
    )
    yield Sweeps(local, on_ray, out / "ray")


def _by_row(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["config_key", "repeat"]).reset_index(drop=True)


#: The least relative width of a noise interval in the comparisons: two repeats can agree by
#: chance (a narrow interval), and this machine switches between two speeds 1.6x apart every
#: few seconds, which raw fps follows (the ratio to the baseline run alongside does not).
FLOOR = {"fps_output": 1.6, "fps_vs_baseline": 1.15}


def _interval(summary: pd.DataFrame, key: str, col: str) -> tuple[float, float]:
    """``col``'s 95 % interval for ``key``, widened to at least x/÷ FLOOR[col] around its center."""
    row = summary.to_dict("index")[key]
    center, low, high = (float(row[c]) for c in (col, f"{col}_ci_low", f"{col}_ci_high"))
    assert all(math.isfinite(v) and v > 0 for v in (center, low, high)), (key, col)
    return min(low, center / FLOOR[col]), max(high, center * FLOOR[col])


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


@needs_pandas
@pytest.mark.model
def test_a_sweep_on_ray_gives_the_local_table_with_the_node_of_each_row(sweeps: Sweeps) -> None:
    import pandas as pd

    from espdetect.profiling import COLUMNS, summarize

    local, on_ray = _by_row(sweeps.local), _by_row(sweeps.ray)
    assert list(on_ray.columns) == list(local.columns) == list(COLUMNS)
    keys = ["config_key", "repeat", "mode"]
    assert on_ray[keys].equals(local[keys]) and len(on_ray) == 4
    assert set(on_ray["status"]) == {"ok"} and set(on_ray["accuracy_status"]) == {"ok"}
    # Accuracy (and everything else that is not a timing) is identical.
    pd.testing.assert_frame_equal(on_ray[list(SAME_EVERYWHERE)], local[list(SAME_EVERYWHERE)])
    assert on_ray["displayed_recall"].gt(0).all()

    nodes = sweeps.ray.attrs["environment"]["ray"]["nodes"]
    labels = {n["node"] for n in nodes}
    assert len(nodes) == 1 and nodes[0]["cpus"] == 2  # one worker holding all of the node's CPUs
    assert set(on_ray["node"]) == labels and all(n["node"] == f"{n['ip']}/{n['node_id'][:8]}" for n in nodes)
    assert set(local["node"]) == {socket.gethostname()}
    assert sweeps.ray.attrs["environment"]["sweep"]["executor"] == "ray"
    assert nodes[0]["probe"] == sweeps.ray.attrs["environment"]["sweep"]["probe"] is not None

    # Timings: each configuration's noise intervals overlap (raw fps, and the ratio to the
    # baseline replayed alongside it), and no median fps is off by more than 3x either way.
    a, b = summarize(sweeps.local).set_index("config_key"), summarize(sweeps.ray).set_index("config_key")
    for key in a.index:
        for col in FLOOR:
            here, there = _interval(a, key, col), _interval(b, key, col)
            assert _overlap(here, there), (key, col, here, there)
        assert 1 / 3 < b.loc[key, "fps_output"] / a.loc[key, "fps_output"] < 3
    assert b["node"].tolist() == [", ".join(sorted(labels))] * 2


@needs_pandas
@pytest.mark.model
def test_the_reference_is_computed_once_and_every_trial_gets_the_shared_object(
    sweeps: Sweeps, ray_cluster: RayCluster, model_path: str, short_clip: Path
) -> None:
    from espdetect.profiling import ResultsStore, sweep

    workers = sweeps.ray.attrs["ray"]["workers"]
    assert [w["trials"] for w in workers] == [4]
    assert sum(w["info"]["references"] for w in workers) == 1
    # Each node fetched two objects, once: the sweep's settings with the clip, and the
    # reference every trial got.
    fetched = {tuple(w["received"]) for w in workers}
    assert len(fetched) == 1 and len(next(iter(fetched))) == 2
    assert len(list(ResultsStore(sweeps.ray_dir).reference_dir.glob("*.json"))) == 1

    # Resumed with a third repeat: only its runs are measured; the reference comes from the folder.
    more = sweep(
        short_clip, _configs(model_path), sweeps.ray_dir, executor="ray", ray_address=ray_cluster.address,
        **{**_SETTINGS, "repeats": 3},
    )  # fmt: skip
    assert len(more) == 6 and sorted(more["repeat"].tolist()) == [0, 0, 1, 1, 2, 2]
    assert [w["trials"] for w in more.attrs["ray"]["workers"]] == [2]
    assert sum(w["info"]["references"] for w in more.attrs["ray"]["workers"]) == 0
    old = _by_row(more[more["repeat"] < 2])
    assert old["started_at"].equals(_by_row(sweeps.ray)["started_at"])  # kept, not measured again


@needs_pandas
@pytest.mark.model
def test_profile_cli_with_a_ray_address_sweeps_on_the_cluster(
    ray_cluster: RayCluster,
    model_path: str,
    short_clip: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from espdetect.cli import main
    from espdetect.profiling import load_results

    out = tmp_path / "out"
    code = main(
        [
            "profile", str(short_clip), "--grid", f"model={model_path} skip=2 reduce=1", "--out", str(out),
            "--repeats", "1", "--warmup", "0", "--reference", "none", "--baseline", "none",
            "--no-progress", "--target-fps", "1", "--ray-address", ray_cluster.address,
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "(the Ray nodes share the runs)" in printed and "Recommended:" in printed
    df = load_results(out)
    assert df["status"].tolist() == ["ok"] and df["frames_detected"].tolist() == [FRAMES // 2]
    environment = df.attrs["environment"]
    assert environment["sweep"]["executor"] == "ray" and environment["ray"]["address"] == ray_cluster.address
    assert df["node"].tolist() == [environment["ray"]["nodes"][0]["node"]]


@needs_pandas
def test_without_ray_the_ray_executor_says_what_to_install(
    short_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from espdetect.cli import main
    from espdetect.profiling import sweep

    configs = grid(model="m.onnx")
    with pytest.raises(ConfigurationError, match="executor 'local' or 'ray'"):
        sweep(short_clip, configs, tmp_path / "a", executor="cluster", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="expected executor='ray' with ray_address='auto'"):
        sweep(short_clip, configs, tmp_path / "a", ray_address="auto", progress=False)

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'espdetect\[ray\]'") as info:
        sweep(short_clip, configs, tmp_path / "a", executor="ray", ray_address="local", progress=False)
    assert info.value.field == "executor"
    assert not (tmp_path / "a").exists()  # refused before anything was written
    code = main(["profile", str(short_clip), "--out", str(tmp_path / "b"), "--ray-address", "local"])
    assert code == 2 and "pip install 'espdetect[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_the_profiling_package_imports_without_ray() -> None:
    # In a fresh process (this one may have imported Ray); pandas may be missing too (the core).
    code = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        import espdetect.profiling
        from espdetect.exceptions import ConfigurationError
        from espdetect.profiling import ray_sweep
        try:
            ray_sweep.import_ray()
        except ConfigurationError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'espdetect[ray]'" in done.stdout
