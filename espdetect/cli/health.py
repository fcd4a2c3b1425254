"""``espdetect health``: ask the local server's ``/health``; exit 0 when it answers ok.

The container's health check (images have no curl): it reads the same settings as ``serve``
(``--config``, ``ESPDETECT_*``), so a port set in the TOML file is the port asked.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from espdetect.cli._command import Command

__all__ = ["COMMAND", "run"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE", help="the server's TOML settings"
    )
    parser.add_argument("--url", default=None, help="ask this URL instead of the one the settings give")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds to wait (default 4)")


def run(args: argparse.Namespace) -> int:
    """Exit 0 when ``/health`` says ok, 1 otherwise (with the reason on stderr)."""
    from espdetect.cli.serve import config_path
    from espdetect.server.hosts import local_url
    from espdetect.server.settings import load_settings

    url = args.url
    if url is None:
        settings = load_settings(config_path(args.config))
        url = f"{local_url(settings.host, settings.port)}/health"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            body = json.loads(response.read(65536))
    except (OSError, ValueError) as exc:
        print(f"espdetect health: {url}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(body, dict) or body.get("status") != "ok":
        print(f"espdetect health: {url} answered {body!r}", file=sys.stderr)
        return 1
    print(f"ok: {body.get('cameras')} cameras, {body.get('viewers')} viewers")
    return 0


COMMAND = Command(
    name="health",
    help="exit 0 when the local server's /health answers ok (the container's health check)",
    description="Ask the espdetect server on this machine whether it is up, with serve's settings.",
    add_arguments=_add_arguments,
    run=run,
)
