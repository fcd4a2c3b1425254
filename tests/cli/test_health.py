from __future__ import annotations

from pathlib import Path

import pytest

from espdetect.cli import main
from espdetect.cli.serve import config_path
from tests._lab import free_port
from tests.cli.serve_process import running


def test_health_asks_the_port_the_config_folder_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The container's health check: settings from /config/espdetect.toml, no flags, no curl.
    port = free_port()
    (tmp_path / "espdetect.toml").write_text(f'port = {port}\ndata_dir = "{tmp_path / "data"}"\n')
    monkeypatch.delenv("ESPDETECT_CAMERAS", raising=False)
    monkeypatch.delenv("ESPDETECT_PORT", raising=False)
    monkeypatch.setenv("ESPDETECT_CONFIG", str(tmp_path))
    with running(["serve"]) as (proc, url):
        assert url.endswith(f":{port}")
        assert main(["health"]) == 0
        assert "ok: 0 cameras, 0 viewers" in capsys.readouterr().out
        proc.kill()
        proc.wait()
    assert main(["health"]) == 1
    assert f"http://127.0.0.1:{port}/health" in capsys.readouterr().err


def test_a_config_folder_without_the_file_means_no_file(tmp_path: Path) -> None:
    assert config_path(tmp_path) is None
    (tmp_path / "espdetect.toml").write_text("")
    assert config_path(tmp_path) == tmp_path / "espdetect.toml"
    # A file that is missing stays an error for the settings loader to report.
    assert config_path(tmp_path / "other.toml") == tmp_path / "other.toml"
