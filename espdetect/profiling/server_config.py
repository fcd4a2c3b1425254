"""`write_server_config`: turn a recommendation into a TOML file ``espdetect serve --config`` reads.

The file has the sections of `espdetect.server.settings.ServerSettings` (``[detector]``,
``[defaults]``) and one ``[[cameras]]`` table; where each option goes comes from the settings
schema. Measured values the server has no setting for (``decode_reduce`` at the time of
writing) are written as comments, so the file always loads.

A configuration with camera axes (a live sweep) also gets a ``[cameras.sensor]`` table with the
camera's ``framesize`` (by name) and ``quality``, which the server applies on every connection.

Motion gating and tracking are written when the sweep varied them (`Recommendation.swept_axes`)
or measured them on; otherwise the file says, in a comment, that they were measured off and the
server's own default applies (the server turns both on by default).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from espdetect.profiling.config import ProfileConfig
from espdetect.profiling.recommend import Recommendation
from espdetect.server.settings import toml_value

__all__ = ["write_server_config"]


def _sections() -> dict[str, str | None]:
    """Option name -> its section (None: top level) in the server's settings schema."""
    from espdetect.server.settings import leaf_fields

    return {name: section for section, name, _ in leaf_fields()}


def _toml_text(
    recommendation: Recommendation | ProfileConfig, camera_url: str, camera_id: str, top: dict[str, object]
) -> str:
    """The TOML text `write_server_config` writes (``top``: host, port and the optional device)."""
    if isinstance(recommendation, Recommendation):
        if not recommendation.ok or recommendation.config is None:
            raise ValueError("expected a recommendation that met its constraints, got one with ok=False")
        config = recommendation.config
        metrics: dict[str, object] = dict(recommendation.metrics)
        swept = recommendation.swept_axes
    else:
        config = recommendation
        metrics = {}
        swept = ()
    lines = [
        "# espdetect server configuration written by the profiling harness",
        f"# {datetime.now(timezone.utc).isoformat(timespec='seconds')}: configuration {config.key}",
    ]
    measured = [
        f"{name} {float(value):.1f}"
        for name in ("fps_output", "latency_ms_p95", "cpu_percent", "bandwidth_kbps", "model_calls_per_min")
        if isinstance(value := metrics.get(name), float) and math.isfinite(value)
    ]
    measured += [
        f"{name} {float(value):.3f}"
        for name in ("displayed_recall", "displayed_iou", "recall", "cpu_core_hours_per_camera_hour")
        if isinstance(value := metrics.get(name), float) and math.isfinite(value)
    ]
    if measured:
        lines.append(f"# measured: {', '.join(measured)}")
    values: dict[str, object] = {
        **top,
        "model": config.model,
        "half": config.half,
        "conf": config.conf,
        "imgsz": config.imgsz,
        "skip": config.skip,
        "quality": config.jpeg_quality,
        "decode_reduce": config.decode_reduce,
    }
    gating, unswept = _gating(config, swept)
    values.update(gating)
    sections = _sections()
    tables: dict[str | None, list[str]] = {}
    for key, value in values.items():
        if key in sections:
            tables.setdefault(sections[key], []).append(f"{key} = {toml_value(value)}")
        else:
            tables.setdefault("defaults", []).append(
                f"# {key} = {toml_value(value)}  (measured, but the server has no such setting)"
            )
    for key in unswept:
        tables.setdefault(sections.get(key, "defaults"), []).append(
            f"# {key}: measured off, not swept; the server's default applies"
        )
    for section, entries in sorted(tables.items(), key=lambda item: item[0] is not None):
        lines += ["", *([f"[{section}]"] if section is not None else []), *entries]
    return "\n".join([*lines, *_camera_lines(config, camera_id, camera_url)])


def _camera_lines(config: ProfileConfig, camera_id: str, camera_url: str) -> list[str]:
    """The ``[[cameras]]`` table, with ``[cameras.sensor]`` when the sweep set the camera."""
    lines = ["", "[[cameras]]", f"id = {toml_value(camera_id)}", f"url = {toml_value(camera_url)}"]
    sensor: dict[str, object] = {}
    if config.camera_framesize is not None:
        sensor["framesize"] = config.camera_framesize  # by name: enum numbers differ by firmware
    if config.camera_quality is not None:
        sensor["quality"] = config.camera_quality
    if sensor:
        # The camera's own settings the sweep measured; the server applies them on every connection.
        lines += ["", "[cameras.sensor]", *(f"{k} = {toml_value(v)}" for k, v in sensor.items())]
    return [*lines, ""]


def _gating(config: ProfileConfig, swept: tuple[str, ...]) -> tuple[dict[str, object], list[str]]:
    """Motion and tracking settings to write, and the names of those left to the server."""
    values: dict[str, object] = {}
    unswept: list[str] = []
    for name, on in (("motion", config.motion), ("tracking", config.tracking)):
        if on or name in swept:
            values[name] = on
        else:
            unswept.append(name)
    if config.motion:
        values["keepalive"] = config.keepalive
    return values, unswept


def write_server_config(
    recommendation: Recommendation | ProfileConfig,
    path: str | Path,
    *,
    camera_url: str,
    camera_id: str = "cam",
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str | None = None,
) -> Path:
    """Write a server TOML config for the recommended (or given) configuration and one camera.

    Raises:
        ValueError: the recommendation did not meet its constraints.

    Example:
        >>> rec = recommend(load_results("out/sweep1"), target_fps=10)  # doctest: +SKIP
        >>> url = "http://192.168.4.1:81/stream"
        >>> write_server_config(rec, "espdetect.toml", camera_url=url)  # doctest: +SKIP
        PosixPath('espdetect.toml')
    """
    top: dict[str, object] = {
        "host": host,
        "port": port,
        **({"device": device} if device is not None else {}),
    }
    text = _toml_text(recommendation, camera_url, camera_id, top)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
