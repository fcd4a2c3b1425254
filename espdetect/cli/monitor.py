"""``espdetect monitor``: a live terminal table of a running server's ``/stats``.

The monitor is only an HTTP client of the server: it polls ``GET /stats`` every interval and
shows, per camera, frame rates, viewers, latency and fault counters, plus the server process's
CPU and memory when the server reports them (``"process"`` in ``/stats``; "-" otherwise).
Parsing (`parse_stats`) and rendering (`render_table`, `render_json`) are pure functions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, astuple, dataclass
from typing import TYPE_CHECKING, Any, Literal, TextIO

from espdetect.cli._command import Command
from espdetect.exceptions import ConfigurationError, EspdetectError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "COMMAND",
    "DEFAULT_URL",
    "CameraRow",
    "MonitorOptions",
    "ServerSummary",
    "Snapshot",
    "StatsUnavailable",
    "auth_for",
    "fetch_snapshot",
    "monitor",
    "normalize_url",
    "parse_stats",
    "render_error_json",
    "render_json",
    "render_table",
    "run",
]

DEFAULT_URL = "http://127.0.0.1:8000"

#: Cursor home; each line ends by erasing the rest of it, the frame by erasing what is below:
#: the table is redrawn in place without the flicker of clearing the whole screen each time.
_HOME = "\x1b[H"
_CLEAR_SCREEN = "\x1b[2J"
_CLEAR_LINE_END = "\x1b[K"
_CLEAR_BELOW = "\x1b[J"


class StatsUnavailable(EspdetectError):
    """``/stats`` could not be read: no connection, an HTTP error status or a body of the wrong shape."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(message)
        self.url = url


@dataclass(frozen=True)
class CameraRow:
    """One camera's line of the table (None: the server did not report the value).

    The fields after ``id`` are the table's columns, in order (see ``_GROUPS``).
    """

    id: str
    upstream_connected: bool | None
    fps_in: float | None
    fps_detect: float | None
    fps_out: float | None
    viewers_raw: int | None
    viewers_annotated: int | None
    viewers_sse: int | None
    #: Camera frame arrival to the annotated frame handed to the viewer's connection.
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    inference_p50_ms: float | None
    dropped: int | None
    reconnects: int | None
    stalls: int | None


@dataclass(frozen=True)
class ServerSummary:
    """Server-wide values: viewers, and the process's resources when ``/stats`` has ``process``."""

    viewers_total: int | None
    max_viewers_total: int | None
    cpu_percent: float | None
    rss_mb: float | None
    threads: int | None
    fds: int | None


@dataclass(frozen=True)
class Snapshot:
    """One ``/stats`` answer, reduced to what the monitor shows."""

    server: ServerSummary
    cameras: tuple[CameraRow, ...]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _section(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class _Group:
    """Adjacent columns of the table: values of one object in a camera's ``/stats`` entry."""

    #: Shown centred over the columns ("" for none).
    title: str
    #: Of each column.
    width: int
    #: The key of the object holding the values; None: the camera's entry itself.
    section: str | None
    #: The values' keys in that object, each with its column header.
    headers: Mapping[str, str]
    #: Turns a value into the `CameraRow` field's type; None for a missing or wrong-typed one.
    read: Callable[[Any], float | int | bool | None]


#: The table's columns, in the order of the `CameraRow` fields they fill.
_GROUPS: tuple[_Group, ...] = (
    _Group("", 3, None, {"upstream_connected": "up"}, _flag),
    _Group("fps", 6, "fps", {"in": "in", "detect": "det", "out": "out"}, _number),
    _Group("viewers", 4, "viewers", {"raw": "raw", "annotated": "ann", "sse": "sse"}, _count),
    _Group("latency ms", 8, "latency_ms", {"p50": "p50", "p95": "p95"}, _number),
    _Group("infer ms", 10, "inference_ms", {"p50": "p50"}, _number),
    _Group("", 9, None, {"dropped": "dropped"}, _count),
    _Group("", 7, None, {"reconnects": "reconn", "stalls": "stalls"}, _count),
)
_WIDTHS = tuple(group.width for group in _GROUPS for _ in group.headers)


def _camera_row(cam_id: str, cam: Mapping[str, Any]) -> CameraRow:
    values: list[Any] = [
        group.read((cam if group.section is None else _section(cam, group.section)).get(key))
        for group in _GROUPS
        for key in group.headers
    ]
    return CameraRow(cam_id, *values)


def parse_stats(body: Any) -> Snapshot:
    """Reduce a ``/stats`` body to a `Snapshot`; fields it lacks become None.

    Raises:
        ValueError: ``body`` is not an object with a ``cameras`` object.

    Example:
        >>> snap = parse_stats({"cameras": {"front": {"fps": {"in": 15.0}}}})
        >>> snap.cameras[0].id, snap.cameras[0].fps_in, snap.server.cpu_percent
        ('front', 15.0, None)
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("cameras"), Mapping):
        got = type(body).__name__ if not isinstance(body, Mapping) else f"keys {sorted(body)[:8]}"
        raise ValueError(f"expected a /stats object with a 'cameras' object, got {got}")
    process = _section(body, "process")
    server = ServerSummary(
        viewers_total=_count(body.get("viewers_total")),
        max_viewers_total=_count(body.get("max_viewers_total")),
        cpu_percent=_number(process.get("cpu_percent")),
        rss_mb=_number(process.get("rss_mb")),
        threads=_count(process.get("threads")),
        fds=_count(process.get("fds")),
    )
    cameras = tuple(
        _camera_row(str(cam_id), cam if isinstance(cam, Mapping) else {})
        for cam_id, cam in body["cameras"].items()
    )
    return Snapshot(server=server, cameras=cameras)


# -- rendering -------------------------------------------------------------------------------


def _cell(value: float | int | bool | None) -> str:
    """A value as the table shows it: "-" when unknown, yes/no, or a float to one decimal."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


_GAP = "  "


def _cells(cells: list[str]) -> str:
    return "".join(_GAP + cell.rjust(width) for cell, width in zip(cells, _WIDTHS, strict=True))


def _group_line(id_width: int) -> str:
    out = " " * id_width
    for group in _GROUPS:
        span = group.width * len(group.headers) + len(_GAP) * (len(group.headers) - 1)
        out += _GAP + (f" {group.title} ".center(span, "-") if group.title else " " * span)
    return out.rstrip()


def _server_line(server: ServerSummary) -> str:
    cpu = "-" if server.cpu_percent is None else f"{server.cpu_percent:.1f} %"
    rss = "-" if server.rss_mb is None else f"{server.rss_mb:.1f} MB"
    limit = "" if server.max_viewers_total is None else f"/{server.max_viewers_total}"
    return (
        f"server  cpu {cpu}  rss {rss}  threads {_cell(server.threads)}  fds {_cell(server.fds)}"
        f"  viewers {_cell(server.viewers_total)}{limit}"
    )


def _title(url: str, when: float) -> str:
    return f"espdetect monitor  {url}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))}"


def render_table(snapshot: Snapshot, url: str, when: float) -> str:
    """The monitor's table: a title, the server line, then one line per camera.

    Column widths depend only on the longest camera id, so successive tables of one server line
    up; a value too wide for its column widens that cell rather than being cut.

    Example:
        >>> snap = parse_stats({"cameras": {"front": {"upstream_connected": True, "stalls": 2}}})
        >>> render_table(snap, "http://127.0.0.1:8000", 0.0).splitlines()[-1].split()
        ['front', 'yes', '-', '-', '-', '-', '-', '-', '-', '-', '-', '-', '-', '2']
    """
    id_width = max([len("camera"), *(len(row.id) for row in snapshot.cameras)])
    lines = [_title(url, when), _server_line(snapshot.server), "", _group_line(id_width)]
    headers = [header for group in _GROUPS for header in group.headers.values()]
    lines.append(("camera".ljust(id_width) + _cells(headers)).rstrip())
    for row in snapshot.cameras:
        lines.append(row.id.ljust(id_width) + _cells([_cell(value) for value in astuple(row)[1:]]))
    if not snapshot.cameras:
        lines.append("(no cameras configured)")
    return "\n".join(lines)


def render_json(snapshot: Snapshot, url: str, when: float) -> str:
    """One JSON line: ``{"time", "url", "server": {...}, "cameras": [{...}, ...]}``.

    The keys are the fields of `ServerSummary` and `CameraRow`; unknown values are null.

    Example:
        >>> line = render_json(parse_stats({"cameras": {"front": {}}}), "http://h:8000", 1.5)
        >>> json.loads(line)["cameras"][0]["id"]
        'front'
    """
    return json.dumps(
        {
            "time": when,
            "url": url,
            "server": asdict(snapshot.server),
            "cameras": [asdict(row) for row in snapshot.cameras],
        }
    )


def render_error_json(message: str, url: str, when: float) -> str:
    """The JSON line for a refresh that failed: ``{"time", "url", "error"}``."""
    return json.dumps({"time": when, "url": url, "error": message})


# -- fetching --------------------------------------------------------------------------------


def normalize_url(text: str) -> str:
    """The server's base URL: ``http://`` added when no scheme is given, no trailing ``/`` or ``/stats``.

    Example:
        >>> normalize_url("192.168.1.10:8000/stats")
        'http://192.168.1.10:8000'
    """
    url = text.strip()
    if "://" not in url:
        url = f"http://{url}"
    url = url.rstrip("/")
    if url.endswith("/stats"):
        url = url[: -len("/stats")]
    return url


def auth_for(
    token: str | None, user: str | None, password: str | None
) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    """Headers and auth for the request: a bearer token, or HTTP basic with user and password.

    Raises:
        ConfigurationError: both a token and a user, or a user without a password.
    """
    import httpx

    if token and user:
        raise ConfigurationError("expected either --token or --user/--password, got both", field="token")
    if token:
        return {"Authorization": f"Bearer {token}"}, None
    if user is not None:
        if password is None:
            raise ConfigurationError(
                "expected a password with --user (--password or ESPDETECT_PASSWORD), got none",
                field="password",
            )
        return {}, httpx.BasicAuth(user, password)
    return {}, None


def fetch_snapshot(client: httpx.Client, url: str) -> Snapshot:
    """``GET {url}/stats`` and parse it.

    Raises:
        StatsUnavailable: the server cannot be reached, answers an error status, or its body
            is not a ``/stats`` object; the message says which, for the user.
    """
    import httpx

    try:
        response = client.get(f"{url}/stats")
    except httpx.TimeoutException:
        timeout = client.timeout.read
        raise StatsUnavailable(
            url, f"server not reachable at {url}: no answer within {timeout or 0:g} s"
        ) from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise StatsUnavailable(url, f"server not reachable at {url}: {reason}") from None
    if response.status_code in (401, 403):
        raise StatsUnavailable(
            url,
            f"server at {url} refused the request: {response.status_code} {response.reason_phrase}"
            " (give --token, or --user and --password)",
        )
    if response.status_code != 200:
        got = f"{response.status_code} {response.reason_phrase}"
        raise StatsUnavailable(url, f"server at {url}: expected 200 for /stats, got {got}")
    try:
        return parse_stats(response.json())
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise StatsUnavailable(url, f"server at {url}: {exc}") from None


# -- the loop --------------------------------------------------------------------------------

OutputFormat = Literal["table", "json"]


@dataclass(frozen=True)
class MonitorOptions:
    """How `monitor` refreshes and prints.

    Attributes:
        interval: seconds between refreshes.
        count: refreshes before returning (None: until interrupted).
        output: a table, or one JSON line per refresh.
    """

    interval: float = 1.0
    count: int | None = None
    output: OutputFormat = "table"


def _is_tty(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def monitor(client: httpx.Client, url: str, options: MonitorOptions, out: TextIO, err: TextIO) -> int:
    """Poll ``/stats`` and print a table (or JSON line) per refresh until ``options.count`` is reached.

    On a terminal the table is redrawn in place; otherwise each one is appended. A failed refresh
    prints why and polling goes on. ``KeyboardInterrupt`` propagates to the caller.

    Returns:
        0 if the last refresh succeeded, 1 if it failed.

    Example:
        >>> with httpx.Client(timeout=2.0) as client:  # doctest: +SKIP
        ...     monitor(client, "http://127.0.0.1:8000", MonitorOptions(count=1), sys.stdout, sys.stderr)
    """
    # A one-shot table is for scripts and pipes: printed plainly even on a terminal.
    # Long: one polling loop whose branches (table, JSON, errors, the deadline) share its state.
    tty = options.output == "table" and options.count != 1 and _is_tty(out)
    last_table: str | None = None
    status = 1
    done = 0
    deadline = time.monotonic()
    while options.count is None or done < options.count:
        when = time.time()
        try:
            snapshot = fetch_snapshot(client, url)
        except StatsUnavailable as exc:
            status = 1
            if options.output == "json":
                text = render_error_json(str(exc), url, when)
            elif tty:
                stamp = time.strftime("%H:%M:%S", time.localtime(when))
                text = f"{last_table or _title(url, when)}\n\n{stamp} {exc} (retrying)"
            elif options.count == 1:
                # A one-shot table for a script: stdout stays empty, the reason goes to stderr.
                print(f"espdetect monitor: {exc}", file=err, flush=True)
                text = ""
            else:
                text = f"{time.strftime('%H:%M:%S', time.localtime(when))} {exc}\n"
        else:
            status = 0
            if options.output == "json":
                text = render_json(snapshot, url, when)
            else:
                text = last_table = render_table(snapshot, url, when)
                if not tty:
                    text += "\n"
        if tty:
            lines = text.split("\n")
            prefix = _CLEAR_SCREEN + _HOME if done == 0 else _HOME
            out.write(prefix + "".join(line + _CLEAR_LINE_END + "\n" for line in lines) + _CLEAR_BELOW)
        elif text:
            out.write(text + "\n")
        out.flush()
        done += 1
        if options.count is not None and done >= options.count:
            break
        # Keep a steady cadence whatever the request took; after a long stall start afresh.
        deadline += options.interval
        delay = deadline - time.monotonic()
        if delay < 0:
            deadline, delay = time.monotonic(), 0.0
        time.sleep(delay)
    return status


# -- command line ----------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _count_arg(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url", nargs="?", default=DEFAULT_URL, help=f"server base URL (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--interval", type=_positive, default=1.0, help="seconds between refreshes (default 1)"
    )
    parser.add_argument(
        "--timeout", type=_positive, default=2.0, help="seconds to wait for each answer (default 2)"
    )
    parser.add_argument("--once", action="store_true", help="print one table and exit (1 if unreachable)")
    parser.add_argument("--count", type=_count_arg, default=None, metavar="N", help="exit after N refreshes")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    auth = parser.add_argument_group("authentication (servers that require it)")
    auth.add_argument(
        "--token",
        default=os.environ.get("ESPDETECT_TOKEN"),
        help="bearer token (default: ESPDETECT_TOKEN)",
    )
    auth.add_argument("--user", default=None, help="HTTP basic user name")
    auth.add_argument(
        "--password",
        default=os.environ.get("ESPDETECT_PASSWORD"),
        help="HTTP basic password (default: ESPDETECT_PASSWORD, which keeps it out of the process list)",
    )


def run(args: argparse.Namespace) -> int:
    """Monitor until Ctrl-C (exit 0), or for ``--once`` / ``--count`` refreshes.

    Raises:
        ConfigurationError: the authentication options contradict each other.
    """
    import httpx

    if args.verbose < 2:
        # httpx logs every request at INFO: one line per refresh would scroll the table away.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    url = normalize_url(args.url)
    headers, basic = auth_for(args.token, args.user, args.password)
    options = MonitorOptions(
        interval=args.interval,
        count=1 if args.once else args.count,
        output="json" if args.json else "table",
    )
    try:
        with httpx.Client(headers=headers, auth=basic, timeout=args.timeout) as client:
            return monitor(client, url, options, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        if options.output == "table":
            print(flush=True)
        return 0


COMMAND = Command(
    name="monitor",
    help="live table of a running server's frame rates, viewers, latency and errors",
    description="Poll a running espdetect server's /stats and show, per camera: fps in/detect/out, "
    "viewers (raw/annotated/sse), latency and inference percentiles, dropped frames, reconnects and "
    "stalls, plus the server's CPU and memory when it reports them.",
    add_arguments=_add_arguments,
    run=run,
)
