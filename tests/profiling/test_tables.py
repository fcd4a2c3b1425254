from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("pandas", reason="sweep tables need pandas: pip install 'espdetect[profile]'")

import pandas as pd

from espdetect.profiling.config import grid
from espdetect.profiling.recommend import recommend
from espdetect.profiling.results import summarize
from espdetect.profiling.sweep import sweep
from espdetect.profiling.tables import margin_over_runner_up, readable_summary, style_summary

from ._squares import SquareFactory


@pytest.fixture(scope="module")
def results(square_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    configs = grid(model="squares.pt", skip=[1, 3], jpeg_quality=[40, 90])
    out = tmp_path_factory.mktemp("sweep")
    return sweep(
        square_clip, configs, out, repeats=2, warmup=1, progress=False, detector_factory=SquareFactory()
    )


def test_readable_summary_has_the_swept_settings_as_columns_ranked_and_rounded(results: pd.DataFrame) -> None:
    rec = recommend(results)
    table = readable_summary(results, rec)
    assert list(table.columns[:3]) == ["recommended", "skip", "jpeg_quality"]
    assert "model_name" not in table.columns  # one model: not a column
    assert len(table) == 4 and table.index.name == "config_key"
    # The recommended configuration comes first, then the recommendation's ranking.
    assert rec.config is not None and table.index[0] == rec.config.key
    assert table["recommended"].tolist() == [True, False, False, False]
    assert list(table.index) == [str(k) for k in rec.candidates["config_key"]]
    # Rounded to what repeats can tell apart.
    assert (table["fps_output"] == table["fps_output"].round(1)).all()
    assert (table["displayed_recall"] == table["displayed_recall"].round(2)).all()
    assert str(table["cpu_percent"].dtype) == "Int64"
    assert all(re.fullmatch(r"\[\d+\.\d\d, \d+\.\d\d\]", v) for v in table["95 % interval"]), table
    assert "camera_bytes_per_frame" not in table.columns  # no camera axes swept
    # Accuracy sits next to speed, not off to the right.
    cols = list(table.columns)
    assert cols.index("displayed_recall") - cols.index("fps_output") <= 4


def test_style_summary_highlights_the_recommended_row_only(results: pd.DataFrame) -> None:
    pytest.importorskip("jinja2")
    table = readable_summary(results, recommend(results))
    html = style_summary(table).to_html()
    # One CSS rule styles the highlighted cells: every cell of row 0 and no other.
    rule = re.search(r"([^{}]*)\{\s*background-color: #fff3c4", html)
    assert rule is not None, html[:2000]
    cells = re.findall(r"#T_\w+_row(\d+)_col\d+", rule.group(1))
    assert set(cells) == {"0"} and len(cells) == len(table.columns) - 1, cells  # "recommended" hidden
    assert "squares.pt@640" not in html  # the long keys stay out of the way


def test_margin_over_runner_up_says_whether_it_is_inside_the_noise(results: pd.DataFrame) -> None:
    rec = recommend(results)
    text = margin_over_runner_up(results, rec)
    assert text is not None, rec.candidates
    runner = str(rec.candidates["config_key"].iloc[1])
    assert text.startswith(f"Runner-up: {runner}: displayed_recall ")
    assert re.search(r"speed x\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\] of the recommended: ", text), text
    assert text.endswith(
        (
            "a tie inside the noise; more repeats can separate them",
            "the recommended is more accurate",
            "the recommended is faster, beyond the noise",
        )
    )
    # From a summary (medians only) there is no interval to give.
    single = margin_over_runner_up(summarize(results), rec)
    assert single is not None and "(one repeat: no interval)" in single


def test_no_runner_up_without_a_second_candidate(results: pd.DataFrame) -> None:
    one = results[results["config_key"] == results["config_key"].iloc[0]]
    assert margin_over_runner_up(one, recommend(one)) is None
