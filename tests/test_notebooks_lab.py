"""The notebooks as a user sees them: opened in a real JupyterLab in Chromium, run with Run All.

tests/test_notebooks.py already executes every notebook headless (nbclient) and checks what it
computes. This test checks what that cannot see: that JupyterLab (with this interpreter's
``python3`` kernel, ``ESPDETECT_NOTEBOOK_SMOKE=1`` and the shared model) runs the notebook from
its own Run menu to the end, that no cell shows an error (a traceback, "Error displaying widget",
"Javascript Error"), that every image output is a decoded picture and that the ipywidgets of
notebook 02 render as widgets (sliders, a preview that got frames) rather than as text.

The notebook is also saved through the File menu, and the saved file is read back: it tells error
outputs from harmless stderr for certain and says how many images and widgets the page must show.
A screenshot of each notebook after its run lands in the test's ``tmp_path``.

By default only 01 (images) and 02 (widgets) run in the lab, as the headless test runs all five;
``ESPDETECT_LAB_ALL=1`` runs all five here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests._lab import LabServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytest.importorskip("jupyterlab")
nbformat = pytest.importorskip("nbformat")
sync_api = pytest.importorskip("playwright.sync_api")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = os.environ.get("ESPDETECT_LAB_ALL", "") not in ("", "0")
#: Seconds for JupyterLab to show the notebook with its kernel started and idle.
READY_TIMEOUT = 180
#: Seconds Run All may take (the sweep notebooks are the slow ones).
RUN_TIMEOUT = 400
#: Seconds for the widget views to finish loading once the run is over.
WIDGETS_TIMEOUT = 60
#: The tallest screenshot taken in one piece (Chromium's limit is a bit above this).
MAX_SHOT_HEIGHT = 15000
_PREFIX_MARK = "kernel-prefix:"

#: What the page shows (one JavaScript call): per code cell its prompt and outputs, and the state
#: of the kernel as the notebook's toolbar and the status bar show it.
_PAGE_STATE = """() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    if (!panel) return null;
    const cells = [...panel.querySelectorAll('.jp-Notebook .jp-CodeCell')].map((cell) => ({
        prompt: (cell.querySelector('.jp-InputArea-prompt')?.textContent || '').trim(),
        outputs: [...cell.querySelectorAll('.jp-OutputArea-output')].map((out) => ({
            mime: out.dataset.mimeType || '',
            text: out.textContent || '',
            widgets: out.querySelectorAll('.jupyter-widgets').length,
            // A widget closed by the kernel (a tqdm bar with leave=False) leaves an empty, hidden output.
            closed: out.classList.contains('lm-mod-hidden') && !out.hasChildNodes(),
            images: [...out.querySelectorAll('img')].map((img) => ({
                widget: img.classList.contains('widget-image'),
                width: img.complete ? img.naturalWidth : 0,
                src: (img.getAttribute('src') || '').slice(0, 16),
            })),
        })),
    }));
    return {
        indicator: panel.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status || '',
        statusbar: document.getElementById('jp-main-statusbar')?.textContent || '',
        cells,
    };
}"""

#: True once the notebook is on screen with its kernel started and idle.
_READY = f"""() => {{
    const state = ({_PAGE_STATE})();
    return !!state && state.cells.length > 0 && state.indicator === 'idle'
        && /\\| Idle/.test(state.statusbar);
}}"""

#: True once Run All is over: the kernel is idle, no cell waits or runs (``[*]``), and at least
#: one cell ran. (A failing cell ends the run early, leaving the cells after it without a count.)
_RUN_OVER = f"""() => {{
    const state = ({_PAGE_STATE})();
    if (!state || state.indicator !== 'idle') return false;
    const prompts = state.cells.map((c) => c.prompt);
    return !prompts.some((p) => p.includes('*')) && prompts.some((p) => /\\[\\d+\\]/.test(p));
}}"""

#: True once no widget view still says it is loading.
_WIDGETS_LOADED = """() => ![...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
    .some((out) => (out.textContent || '').includes('Loading widget...'))"""

#: How far the notebook scrolls (pixels beyond its visible height).
_OVERFLOW = """() => {
    const el = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
    return el ? el.scrollHeight - el.clientHeight : 0;
}"""
#: Scroll the notebook to its top, resolving once the page has been drawn again.
_SCROLL_TOP = """() => {
    const el = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
    if (el) el.scrollTop = 0;
    return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
}"""

#: Text a cell shows when an output failed to render.
_RENDER_ERRORS = ("Error displaying widget", "Javascript Error", "Loading widget...")
#: A traceback, or an exception's closing "SomethingError: message" line, in stderr-styled text.
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*[\w.]*(Error|Exception)\b.*:", re.M)
_IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@dataclass(frozen=True)
class Expect:
    """What a notebook must show besides running clean."""

    images: bool = False
    widgets: bool = False


def _param(name: str, expect: Expect, default: bool) -> Any:
    marks = (
        []
        if default or ALL
        else [
            pytest.mark.skip(
                reason="in CI only 01 and 02 run in JupyterLab; set ESPDETECT_LAB_ALL=1 to run all five"
            )
        ]
    )
    return pytest.param(name, expect, id=name.split("_", 1)[1].removesuffix(".ipynb"), marks=marks)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, driven by playwright as in tests/server/conftest.py."""
    from tests.server.conftest import _CHROMIUM_ARGS, _chromium

    executable = _chromium()  # skips without chromium
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=_CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def lab(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """JupyterLab on a copy of the notebooks, each with a first cell that prints the kernel's prefix
    (so the test can prove the kernel runs this interpreter: the venv)."""
    root = tmp_path_factory.mktemp("lab-notebooks")
    home = tmp_path_factory.mktemp("lab-home")
    for source in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(source, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(f"import sys\nprint({_PREFIX_MARK!r}, sys.prefix)"))
        nbformat.write(nb, root / source.name)
    env = {"ESPDETECT_NOTEBOOK_SMOKE": "1", "ESPDETECT_MODEL": model_path}
    with LabServer(root, home, env) as server:
        yield server


# -- driving JupyterLab ---------------------------------------------------------------------------


def _menu(page: Page, menu: str, command: str) -> None:
    """Click ``menu`` in the menu bar, then its item that runs ``command``."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{re.escape(menu)}$")).click()
    page.locator(f".lm-Menu-item[data-command='{command}']").click()


def _state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] | None = page.evaluate(_PAGE_STATE)
    assert state is not None, "no notebook panel on the page"
    return state


def _save(page: Page, lab: LabServer, name: str) -> dict[str, Any]:
    """Save through File > Save Notebook and read the file back."""
    _menu(page, "File", "docmanager:save")
    # The tab's dirty mark goes once the server has the file (written atomically).
    page.wait_for_selector(
        "#jp-main-dock-panel .lm-TabBar-tab.jp-mod-current:not(.jp-mod-dirty)", timeout=30_000
    )
    saved: dict[str, Any] = json.loads((lab.root / name).read_text())
    return saved


def _fit_window(page: Page) -> None:
    """Make the window as tall as the notebook and scroll it to the top: everything on screen, so a
    screenshot shows it all and nothing is left unrendered by JupyterLab's content-visibility."""
    extra = int(page.evaluate(_OVERFLOW))
    viewport = page.viewport_size or {"width": 1400, "height": 900}
    height = min(MAX_SHOT_HEIGHT, viewport["height"] + max(0, extra))
    page.set_viewport_size({"width": viewport["width"], "height": height})
    page.evaluate(_SCROLL_TOP)


# -- the test -------------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.browser
@pytest.mark.timeout(READY_TIMEOUT + RUN_TIMEOUT + 300)
@pytest.mark.parametrize(
    ("name", "expect"),
    [
        _param("01_quickstart.ipynb", Expect(images=True), default=True),
        _param("02_live_tuning.ipynb", Expect(widgets=True), default=True),
        _param("03_profiling_sweep.ipynb", Expect(images=True), default=False),
        _param("04_event_tuning.ipynb", Expect(images=True), default=False),
        _param("05_capacity.ipynb", Expect(images=True), default=False),
    ],
)
def test_notebook_in_jupyterlab(
    name: str, expect: Expect, browser: Browser, lab: LabServer, tmp_path: Path
) -> None:
    shot = tmp_path / f"{Path(name).stem}.png"
    page_errors: list[str] = []
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))

        def fail(why: str) -> str:
            try:
                _fit_window(page)
                page.screenshot(path=str(shot))
            except sync_api.Error as exc:  # the message matters more than the picture
                return f"{why}\n(no screenshot: {exc!r})\nserver log:\n{lab.log_tail()}"
            return f"{why}\nscreenshot: {shot}\npage errors: {page_errors}\nserver log:\n{lab.log_tail()}"

        # A workspace of its own: nothing restored from the notebook tested before.
        page.goto(lab.lab_url(name, workspace=Path(name).stem))
        try:
            page.wait_for_function(_READY, timeout=READY_TIMEOUT * 1000, polling=250)
        except sync_api.TimeoutError as exc:
            pytest.fail(fail(f"{name} did not open with an idle kernel within {READY_TIMEOUT} s: {exc}"))

        started = time.monotonic()
        _menu(page, "Run", "runmenu:run-all")
        try:
            page.wait_for_function(_RUN_OVER, timeout=RUN_TIMEOUT * 1000, polling=500)
        except sync_api.TimeoutError as exc:
            prompts = [cell["prompt"] for cell in _state(page)["cells"]]
            pytest.fail(fail(f"Run All of {name} not over within {RUN_TIMEOUT} s ({prompts}): {exc}"))
        print(f"{name}: Run All took {time.monotonic() - started:.1f} s in JupyterLab")

        saved = _save(page, lab, name)
        _fit_window(page)
        with contextlib.suppress(sync_api.TimeoutError):  # reported below, with the cell that says so
            page.wait_for_function(_WIDGETS_LOADED, timeout=WIDGETS_TIMEOUT * 1000, polling=250)
        page.screenshot(path=str(shot))
        _check(page, name, saved, expect, fail)
    finally:
        context.close()
        lab.shutdown_kernels()


def _check(page: Page, name: str, saved: dict[str, Any], expect: Expect, fail: Callable[[str], str]) -> None:
    """Assert on what the page shows after the run and what the saved file holds.

    Messages number the code cells from 0, the test's own kernel-prefix cell; the notebook's first
    code cell is 1."""
    state = _state(page)
    cells = state["cells"]
    code = [cell for cell in saved["cells"] if cell["cell_type"] == "code"]
    assert len(cells) == len(code), fail(f"{len(cells)} code cells on the page, {len(code)} in the file")

    # No error output (for certain, from the saved file), and nothing on the page that reads as one.
    errors = [
        f"code cell {i}: {out['ename']}: {out['evalue']}"
        for i, cell in enumerate(code)
        for out in cell["outputs"]
        if out["output_type"] == "error"
    ]
    assert not errors, fail(f"error outputs in {name}: {errors}")
    shown: list[str] = []
    for i, cell in enumerate(cells):
        for out in cell["outputs"]:
            text = out["text"]
            if out["mime"] == "application/vnd.jupyter.stderr" and _TRACEBACK.search(text):
                shown.append(f"code cell {i} (stderr): {text[-1500:]}")
            shown += [
                f"code cell {i}: {marker!r}: {text[:300]}" for marker in _RENDER_ERRORS if marker in text
            ]
    assert not shown, fail(f"{name} shows errors:\n" + "\n".join(shown))

    # Every cell ran, in JupyterLab's model and on the page.
    prompts = [cell["prompt"] for cell in cells]
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), fail(f"cells not run: {prompts}")
    assert all(cell["execution_count"] is not None for cell in code), fail("cells without a count")

    # The kernel is this interpreter's.
    first = "".join(out["text"] for out in cells[0]["outputs"])
    assert f"{_PREFIX_MARK} {sys.prefix}" in first, fail(f"kernel is not {sys.prefix}: {first!r}")

    # Each output on the page is the saved output of the same place: image outputs must show a
    # decoded picture, widget outputs a widget view (or nothing, when the kernel closed the widget).
    images = widgets = 0
    missing: list[str] = []
    for i, (page_cell, file_cell) in enumerate(zip(cells, code, strict=True)):
        page_outs, file_outs = page_cell["outputs"], file_cell["outputs"]
        assert len(page_outs) == len(file_outs), fail(
            f"code cell {i}: {len(page_outs)} outputs on the page, {len(file_outs)} in the file"
        )
        for page_out, file_out in zip(page_outs, file_outs, strict=True):
            data = file_out.get("data", {})
            if _WIDGET_MIME in data:
                widgets += 1
                if not (page_out["widgets"] or page_out["closed"]):
                    missing.append(f"code cell {i}: widget shown as {page_out['text'][:200]!r}")
            elif any(mime in data for mime in _IMAGE_MIMES) and "text/html" not in data:
                images += 1
                if not any(img["width"] > 0 for img in page_out["images"]):
                    missing.append(f"code cell {i}: image not shown: {page_out['images']}")
    assert not missing, fail(f"{name}: outputs not rendered:\n" + "\n".join(missing))
    pictures = [
        img for cell in cells for out in cell["outputs"] for img in out["images"] if not img["widget"]
    ]
    assert all(img["width"] > 0 for img in pictures), fail(f"images not decoded: {pictures}")
    if expect.images:
        assert images > 0, fail(f"{name} showed no image")
    if expect.widgets:
        assert widgets > 0, fail(f"{name} displayed no widget")
        slider = page.locator(".jp-NotebookPanel .jupyter-widgets.widget-slider").first
        slider.scroll_into_view_if_needed()
        assert slider.is_visible(), fail("no slider visible")
        previews = [
            img for cell in cells for out in cell["outputs"] for img in out["images"] if img["widget"]
        ]
        assert previews and all(img["width"] > 0 and img["src"].startswith("blob:") for img in previews), (
            fail(f"the preview widget shows no frame: {previews}")
        )
