from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from espdetect.cli import main
from tests.cli.cli_process import run_espdetect


def test_json_lines_from_the_installed_command(model_path: str, sample_images: dict[str, Path]) -> None:
    proc = run_espdetect(
        "detect",
        str(sample_images["bus"]),
        str(sample_images["zidane"]),
        "--json",
        env={"ESPDETECT_MODEL": model_path},
    )

    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["image"]).name for r in records] == ["bus.jpg", "zidane.jpg"]
    bus_labels = [d["label"] for d in records[0]["detections"]]
    assert "bus" in bus_labels and bus_labels.count("person") >= 3
    assert (records[0]["width"], records[0]["height"]) == (810, 1080)
    assert records[0]["timings_ms"]["inference_ms"] > 0
    assert [d["label"] for d in records[1]["detections"]].count("person") >= 2


def test_human_readable_lines_and_annotated_output(
    model_path: str, sample_images: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "annotated"

    code = main(["detect", str(sample_images["bus"]), "--model", model_path, "--out", str(out_dir)])

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{sample_images['bus']}: ")
    labels = [line.split()[0] for line in lines[1:]]
    assert "bus" in labels and labels.count("person") >= 3
    _label, conf, *box = lines[1].split()
    assert 0 < float(conf) <= 1 and len(box) == 4
    written = cv2.imread(str(out_dir / "bus.jpg"))
    original = cv2.imread(str(sample_images["bus"]))
    assert written is not None and original is not None
    assert written.shape == original.shape


def test_unreadable_image_exits_2_and_keeps_going(
    model_path: str, sample_images: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 definitely not a jpeg")

    code = main(
        [
            "detect",
            str(garbage),
            str(tmp_path / "missing.jpg"),
            str(sample_images["zidane"]),
            "--model",
            model_path,
        ]
    )

    captured = capsys.readouterr()
    assert code == 2
    assert "garbage.jpg' (not a readable image)" in captured.err
    assert "missing.jpg' (no such file)" in captured.err
    assert "zidane.jpg: " in captured.out


def test_missing_model_exits_2_with_advice(
    sample_images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["detect", str(sample_images["bus"]), "--model", "nonexistent_model_xyz.pt", "--json"])

    captured = capsys.readouterr()
    assert code == 2
    assert "could not load model 'nonexistent_model_xyz.pt'" in captured.err
    assert "--model PATH" in captured.err
    assert captured.out == ""


def test_bad_setting_exits_2(sample_images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["detect", str(sample_images["bus"]), "--conf", "2"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("espdetect detect: ") and "conf" in err and "got 2.0" in err, err
