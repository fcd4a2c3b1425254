"""The tuning notebooks run clean, headless, against the emulator with the shared model.

Each notebook is executed by nbclient in a fresh ``python3`` kernel (this interpreter's, checked
below) with ``ESPDETECT_NOTEBOOK_SMOKE=1``: short recordings and previews, tiny sweep grids.
The working folder is a temporary one, so clips, reports and configs land there.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Seconds one cell may run (model loading and the sweep are the slow ones).
CELL_TIMEOUT = 240

Notebook = Any  # nbformat.NotebookNode


def _outputs(nb: Notebook) -> list[dict[str, Any]]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _text(nb: Notebook) -> str:
    """Everything the notebook printed to stdout, plus the text of its results."""
    parts: list[str] = []
    for out in _outputs(nb):
        if out["output_type"] == "stream" and out["name"] == "stdout":
            parts.append(out["text"])
        elif out["output_type"] == "execute_result":
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def _has_mime(nb: Notebook, mime: str) -> bool:
    return any(mime in out.get("data", {}) for out in _outputs(nb))


def _execute(name: str, cwd: Path, model: str) -> Notebook:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # A first cell, only in this in-memory copy, proves the kernel is this interpreter (the venv).
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint('kernel-prefix:', sys.prefix)"))
    env = {**os.environ, "ESPDETECT_NOTEBOOK_SMOKE": "1", "ESPDETECT_MODEL": model}
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute(env=env)  # raises CellExecutionError, with the traceback, when a cell fails
    return nb


def _check_quickstart(nb: Notebook, cwd: Path) -> None:
    text = _text(nb)
    assert "person" in text, text
    assert "total: arrival -> JPEG" in text, text
    assert _has_mime(nb, "image/jpeg"), "expected annotated JPEGs shown inline"
    assert _has_mime(nb, "image/png"), "expected the matplotlib frame grid inline"


def _check_live_tuning(nb: Notebook, cwd: Path) -> None:
    text = _text(nb)
    assert "first frame detected with the new settings" in text, text
    shown = re.search(r"live preview: (\d+) frames shown", text)
    assert shown is not None and int(shown.group(1)) > 0, text
    # Camera controls reach the camera; Stop disables the controls; Restart builds a fresh pipeline.
    assert "camera: firmware 2.x, QVGA (320x240)" in text, text
    assert "camera set to VGA, quality 20: frames now 640x480, shown 640px wide" in text, text
    assert re.search(r"stopped after \d+ frames: controls disabled, button says Restart", text), text
    assert text.count("restarted: a fresh pipeline shows frames again") == 2, text
    assert "an unreachable camera is shown under the controls: SourceUnavailable" in text, text
    assert _has_mime(nb, "application/vnd.jupyter.widget-view+json"), "expected the widgets displayed"


def _check_profiling_sweep(nb: Notebook, cwd: Path) -> None:
    from espdetect.server.settings import load_settings

    out = cwd / "espdetect-profiling"
    config = out / "espdetect.toml"
    assert config.is_file(), sorted(p.name for p in out.iterdir())
    settings = load_settings(config)
    assert [cam.url for cam in settings.cameras] == ["http://192.168.4.1:81/stream"]
    assert (out / "sweep" / "report.html").is_file()
    assert (out / "clip" / "index.csv").is_file()
    assert _has_mime(nb, "image/png"), "expected the sweep plots inline"
    assert "Recommended:" in _text(nb)


def _check_event_tuning(nb: Notebook, cwd: Path) -> None:
    from espdetect.server.settings import load_settings

    out = cwd / "espdetect-events"
    assert (out / "yard-clip" / "visits.csv").is_file(), sorted(p.name for p in out.iterdir())
    camera = load_settings(out / "events.toml").cameras[0]
    assert camera.labels == ["person"] and camera.zones, camera
    text = _text(nb)
    # The demo clip's recommended settings find each visit once, with nothing false.
    recommended = re.search(r"recommended: .*\n\s+(.*)", text)
    assert recommended is not None, text
    assert "4 matched, 0 missed (0 merged), 0 duplicated, 0 false" in recommended.group(1), text
    assert _has_mime(nb, "image/png"), "expected the zone drawing, the error grids and the timeline inline"


def _check_capacity(nb: Notebook, cwd: Path) -> None:
    from espdetect.server.settings import load_settings

    text = _text(nb)
    # The comparison of the two configurations carries its interval and a verdict.
    assert re.search(
        r"\d\.\d{3}x \[\d\.\d{3}, \d\.\d{3}\] \(\+-[\d.]+ %, 2 repeats\): "
        r"(inside the noise|a real difference)",
        text,
    ), text
    assert "The machine's speed (the probe:" in text, text
    found = re.search(r"capacity: (\d+) cameras", text)
    assert found is not None, text
    out = cwd / "espdetect-capacity"
    assert (out / "capacity" / "capacity.png").is_file()
    assert _has_mime(nb, "image/png"), "expected the interval plot and the capacity plot inline"
    if int(found.group(1)) >= 1:
        assert len(load_settings(out / "espdetect.toml").cameras) == int(found.group(1))
    else:
        assert "not even one camera held the targets" in text, text


@pytest.mark.model
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("name", "check"),
    [
        pytest.param("01_quickstart.ipynb", _check_quickstart, id="quickstart"),
        pytest.param("02_live_tuning.ipynb", _check_live_tuning, id="live_tuning"),
        pytest.param("03_profiling_sweep.ipynb", _check_profiling_sweep, id="profiling_sweep"),
        pytest.param("04_event_tuning.ipynb", _check_event_tuning, id="events"),
        pytest.param("05_capacity.ipynb", _check_capacity, id="capacity"),
    ],
)
def test_notebook_runs_clean(
    name: str, check: Callable[[Notebook, Path], None], model_path: str, tmp_path: Path
) -> None:
    nb = _execute(name, tmp_path, model_path)
    errors = [out for out in _outputs(nb) if out["output_type"] == "error"]
    assert not errors, errors
    assert f"kernel-prefix: {sys.prefix}\n" in _text(nb)
    check(nb, tmp_path)


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_committed_clean(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.execution_count is None and cell.outputs == [] for cell in code)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    sources = "\n".join(cell.source for cell in code)
    # Machine-specific paths would break on every other machine; the model comes from the env.
    assert "/work/" not in sources and ".onnx" not in sources and "/home/" not in sources
