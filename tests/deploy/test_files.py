"""The deployment files: compose (podman-compose), the systemd unit (systemd-analyze), the example
config (the settings loader) and the image builder's choices."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from espdetect.server.settings import load_settings
from tests.deploy import image_builder

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: The tools' verdicts are the checks; a machine without them skips and says which.
needs_compose = pytest.mark.skipif(
    importlib.util.find_spec("podman_compose") is None, reason="needs podman-compose (the test extra)"
)
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


def _compose_config(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # PyPI's podman-compose: Debian bookworm's 1.0.3 has no `config` command.
        [sys.executable, "-m", "podman_compose", "-f", str(folder / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
    )


@needs_compose
def test_compose_file_passes_podman_compose_and_wires_the_broker() -> None:
    done = _compose_config(DEPLOY)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    app, broker = config["services"]["espdetect"], config["services"]["mosquitto"]
    assert app["restart"] == broker["restart"] == "unless-stopped"
    assert app["healthcheck"]["test"] == ["CMD", "espdetect", "health"]
    assert broker["healthcheck"]["test"][1] == "mosquitto_sub"
    assert app["environment"]["ESPDETECT_MQTT_URL"] == "mqtt://mosquitto:1883"
    assert {v.split(":")[1] for v in app["volumes"]} == {"/config", "/data"}
    assert "mosquitto" in app["depends_on"]
    # Mosquitto 2 listens on localhost only unless told otherwise: the app container could not connect.
    mosquitto_conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "listener 1883 0.0.0.0" in mosquitto_conf
    mounted = {v.split(":")[0] for v in broker["volumes"]}
    assert "./mosquitto/mosquitto.conf" in mounted and (DEPLOY / "config" / "espdetect.toml").is_file()


@needs_compose
def test_podman_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    # The check above can fail: a file that is not a compose file is refused.
    (tmp_path / "compose.yaml").write_text("services:\n  espdetect: [image\n")
    assert _compose_config(tmp_path).returncode != 0


def test_example_config_is_valid_and_runs_unattended() -> None:
    settings = load_settings(DEPLOY / "config" / "espdetect.toml")
    assert settings.events is True and settings.defaults.always_on is True
    assert [cam.id for cam in settings.cameras] == ["front"]
    assert settings.sensor == {"framesize": "VGA", "quality": 12}


def _unit_with(tmp_path: Path, exec_start: str) -> Path:
    text = (DEPLOY / "espdetect.service").read_text()
    assert "ExecStart=/opt/espdetect/bin/espdetect serve" in text
    unit = tmp_path / "espdetect.service"
    unit.write_text(text.replace("/opt/espdetect/bin/espdetect", exec_start))
    return unit


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


@needs_systemd
def test_systemd_unit_verifies_against_a_real_install(tmp_path: Path) -> None:
    # This test run's own install stands in for /opt/espdetect: ExecStart must exist and run.
    installed = Path(sys.executable).parent / "espdetect"
    assert subprocess.run([str(installed), "health", "--help"], capture_output=True).returncode == 0
    done = _verify(_unit_with(tmp_path, str(installed)))
    assert done.returncode == 0 and "Unknown" not in done.stderr, done.stderr
    text = (DEPLOY / "espdetect.service").read_text()
    for option in ("Restart=on-failure", "DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes"):
        assert option in text.splitlines()


@needs_systemd
def test_systemd_analyze_refuses_a_unit_whose_program_is_missing(tmp_path: Path) -> None:
    done = _verify(_unit_with(tmp_path, str(tmp_path / "missing" / "espdetect")))
    assert done.returncode != 0 and "not executable" in done.stderr


def test_image_installs_the_core_less_opencv() -> None:
    requirements = image_builder.server_requirements()
    names = {r.split(">")[0].split("[")[0].split(";")[0].strip() for r in requirements}
    assert "onnxruntime" in names and "simplejpeg" in names and "fastapi" in names
    assert "opencv-python-headless" not in names
    assert not names & {"torch", "ultralytics", "pandas", "matplotlib", "jupyterlab"}


def test_containerfile_keeps_what_a_24_7_box_needs() -> None:
    lines = [line.strip() for line in (DEPLOY / "Containerfile").read_text().splitlines()]
    assert 'ENTRYPOINT ["espdetect"]' in lines and 'CMD ["serve"]' in lines
    assert "USER espdetect" in lines and 'VOLUME ["/config", "/data"]' in lines
    assert any(line.startswith("HEALTHCHECK") and '"health"' in line for line in lines)
    assert "ARG BASE=docker.io/library/python:3.11-slim-bookworm" in lines
