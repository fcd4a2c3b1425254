"""``espdetect``'s own error handling: one line for what the user can fix, a traceback for bugs."""

from __future__ import annotations

import argparse
import dataclasses
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest

import espdetect.cli.record
from espdetect.cli import build_parser, main, user_error_message
from tests.cli.cli_process import one_error_line, run_espdetect

_LISTED_COMMANDS = (
    "demo",
    "serve",
    "emulate",
    "detect",
    "export",
    "record",
    "profile",
    "capacity",
    "monitor",
    "health",
    "hash-password",
)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that a listening socket holds; never 65535 (emulate needs PORT+1)."""
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        if port < 65535:
            break
        sock.close()
    sock.listen()
    try:
        yield port
    finally:
        sock.close()


class _Settings(pydantic.BaseModel):
    conf: float = pydantic.Field(ge=0, le=1)
    port: int


def _validation_error() -> pydantic.ValidationError:
    with pytest.raises(pydantic.ValidationError) as caught:
        _Settings.model_validate({"conf": 2, "port": "eighty"})
    return caught.value


def _record_raising(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Make ``espdetect record`` raise ``error`` as soon as it runs."""

    def run(args: argparse.Namespace) -> int:
        raise error

    command = dataclasses.replace(espdetect.cli.record.COMMAND, run=run)
    monkeypatch.setattr(espdetect.cli.record, "COMMAND", command)


def test_bad_setting_is_one_line_and_exit_2() -> None:
    proc = run_espdetect("emulate", "--port", "0", "--quality", "99")

    line = one_error_line(proc, "emulate")
    assert "expected quality 0..63" in line and "99" in line
    assert proc.stdout == ""


def test_missing_model_is_one_line_and_exit_2(sample_images: dict[str, Path]) -> None:
    proc = run_espdetect("detect", str(sample_images["bus"]), "--model", "/nonexistent.onnx")

    line = one_error_line(proc, "detect")
    assert "could not load model '/nonexistent.onnx'" in line
    assert proc.stdout == ""


def test_port_in_use_names_the_address_and_suggests_another(busy_port: int) -> None:
    proc = run_espdetect("emulate", "--port", str(busy_port), timeout=60)

    line = one_error_line(proc, "emulate")
    assert f"127.0.0.1:{busy_port}" in line and "in use" in line
    assert line.endswith("--port")


def test_serve_on_a_port_in_use_fails_before_loading_the_model(busy_port: int) -> None:
    proc = run_espdetect(
        "serve", "--camera", "http://127.0.0.1:9/stream", "--port", str(busy_port), timeout=60
    )

    line = one_error_line(proc, "serve")
    assert f"127.0.0.1:{busy_port} is already in use" in line and line.endswith("--port")
    assert "model" not in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--model", "/nonexistent.onnx"], "could not load model '/nonexistent.onnx'", id="model"
        ),
        pytest.param(["--imgsz", "320"], "expected imgsz 640", id="size-the-model-cannot-take"),
    ],
)
def test_serve_with_a_model_it_cannot_use_is_one_line(args: list[str], message: str) -> None:
    proc = run_espdetect(
        "serve", "--camera", "http://127.0.0.1:9/stream", "--port", "0", *args,
        env={"ESPDETECT_MODEL": ""}, timeout=60,
    )  # fmt: skip

    assert message in one_error_line(proc, "serve")


def test_validation_error_lists_each_field_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _record_raising(monkeypatch, _validation_error())

    code = main(["record", "synthetic", "--out", "unused"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("espdetect record: conf: Input should be less than or equal to 1; port: ")


def test_a_bug_keeps_its_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    _record_raising(monkeypatch, KeyError("not a user error"))

    with pytest.raises(KeyError, match="not a user error"):
        main(["record", "synthetic", "--out", "unused"])


def test_only_the_port_in_use_is_a_user_error_among_os_errors() -> None:
    assert user_error_message(OSError(98, "Address already in use")) is not None
    assert user_error_message(PermissionError(13, "Permission denied")) is None
    assert user_error_message(_validation_error()) is not None


def test_every_command_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])

    listed = re.findall(r"^    (\S+)", capsys.readouterr().out, re.MULTILINE)
    assert listed == list(_LISTED_COMMANDS)
