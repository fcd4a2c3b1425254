"""`write_server_config`: turn a recommendation into a TOML file ``espdetect serve --config`` reads.

The file uses the flat keys of `espdetect.server.settings.ServerSettings` (``model``, ``conf``,
``imgsz``, ``half``, ``skip``, ``quality``...) and one ``[[cameras]]`` table. Settings the
server does not have (``decode_reduce`` at the time of writing) are written as comments, so the
file always loads.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from espdetect.profiling.config import ProfileConfig
from espdetect.profiling.recommend import Recommendation

__all__ = ["server_config_toml", "write_server_config"]


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number for TOML, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"expected a TOML scalar or list, got {type(value).__name__}")


def _server_fields() -> set[str] | None:
    try:
        from espdetect.server.settings import ServerSettings
    except ImportError:
        return None
    return set(ServerSettings.model_fields)


def server_config_toml(
    recommendation: Recommendation | ProfileConfig,
    *,
    camera_url: str,
    camera_id: str = "cam",
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str | None = None,
) -> str:
    """The TOML text `write_server_config` writes.

    Example:
        >>> text = server_config_toml(ProfileConfig(model="m.onnx", skip=2), camera_url="http://cam:81/stream")
        >>> "skip = 2" in text and "[[cameras]]" in text
        True
    """
    if isinstance(recommendation, Recommendation):
        if not recommendation.ok or recommendation.config is None:
            raise ValueError("expected a recommendation that met its constraints, got one with ok=False")
        config = recommendation.config
        metrics: dict[str, object] = dict(recommendation.metrics)
    else:
        config = recommendation
        metrics = {}
    known = _server_fields()
    lines = [
        "# espdetect server configuration written by the profiling harness",
        f"# {datetime.now(timezone.utc).isoformat(timespec='seconds')}: configuration {config.key}",
    ]
    measured = [
        f"{name} {float(value):.1f}"
        for name in ("fps_output", "latency_ms_p95", "cpu_percent", "bandwidth_kbps")
        if isinstance(value := metrics.get(name), float) and math.isfinite(value)
    ]
    measured += [
        f"{name} {float(value):.3f}"
        for name in ("displayed_recall", "recall")
        if isinstance(value := metrics.get(name), float) and math.isfinite(value)
    ]
    if measured:
        lines.append(f"# measured: {', '.join(measured)}")
    values: dict[str, object] = {
        "host": host,
        "port": port,
        "model": config.model,
        "conf": config.conf,
        "imgsz": config.imgsz,
        "half": config.half,
        "skip": config.skip,
        "quality": config.jpeg_quality,
        "decode_reduce": config.decode_reduce,
    }
    if device is not None:
        values["device"] = device
    lines.append("")
    for key, value in values.items():
        if known is not None and key not in known:
            lines.append(f"# {key} = {_toml(value)}  (measured, but the server has no such setting)")
        else:
            lines.append(f"{key} = {_toml(value)}")
    lines += ["", "[[cameras]]", f"id = {_toml(camera_id)}", f"url = {_toml(camera_url)}", ""]
    return "\n".join(lines)


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
    text = server_config_toml(
        recommendation, camera_url=camera_url, camera_id=camera_id, host=host, port=port, device=device
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
