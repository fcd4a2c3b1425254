"""Faults the emulator can inject into its stream, modelled on what real ESP32-CAMs do wrong.

A fault is a small immutable value; the emulator holds a tuple of them and consults it for
every frame, so :meth:`Emulator.set_faults <espdetect.emulator.Emulator.set_faults>` changes
behaviour while streams are running. Each time the fault set is replaced, frame counts
restart: for a stream that is already running, "after N frames" then means N frames after
the change; for a new stream, N frames after it started.

The same faults can be written as text for the command line, ``kind[:key=value[,key=value]]``::

    stall:seconds=3          drop_after:frames=50      refuse:seconds=5
    corrupt_jpeg:frames=10   truncated_jpeg:size=2000  wrong_length:delta=-100
    oversize:size=8000000    html_error:status=500     legacy_framing
    slow:rate=20000
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import Enum

__all__ = [
    "DEFAULT_OVERSIZE_BYTES",
    "Fault",
    "FaultKind",
    "corrupt_jpeg",
    "pad_jpeg",
    "parse_fault",
    "truncate_jpeg",
]

#: OVERSIZE parts default to 6 MiB: above espdetect's 4 MiB part limit and the ESP32's own buffer.
DEFAULT_OVERSIZE_BYTES = 6 * 1024 * 1024


class FaultKind(Enum):
    """What goes wrong. The table says which :class:`Fault` fields each kind reads.

    ========================  =========================================================================
    kind                      behaviour (fields, defaults)
    ========================  =========================================================================
    ``STALL``                 once ``frames`` frames (0) went out, send nothing for ``seconds`` (None:
                              until the fault set changes) while keeping the socket open, then resume.
    ``DROP_AFTER``            close the stream connection after ``frames`` frames (required); every
                              new stream is dropped again after as many frames.
    ``CORRUPT_JPEG``          every ``frames``-th frame (1) has bytes flipped mid-image; SOI and EOI stay.
    ``TRUNCATED_JPEG``        every ``frames``-th frame (1) is cut to ``size`` bytes (half the JPEG);
                              Content-Length matches the cut bytes.
    ``WRONG_LENGTH``          every ``frames``-th frame (1) announces ``len + delta`` bytes (+1000)
                              but sends the JPEG unchanged.
    ``OVERSIZE``              every ``frames``-th frame (1) is padded with JPEG comment segments to at
                              least ``size`` bytes (6 MiB); it still decodes.
    ``HTML_ERROR``            new ``/stream`` requests get an HTML error page with ``status`` (503).
    ``LEGACY_FRAMING``        new streams use the pre-2020 framing: headers, JPEG, then the boundary;
                              no X-Timestamp, no X-Framerate.
    ``REFUSE``                reboot: all connections are reset and both ports refuse connections for
                              ``seconds`` (5.0); sensor settings return to the configured ones and
                              X-Timestamp restarts near 0. With ``frames`` set, the reboot happens
                              once a stream has sent that many frames; otherwise at once.
    ``SLOW``                  stream bytes go out at ``rate`` bytes per second (20000).
    ========================  =========================================================================
    """

    STALL = "stall"
    DROP_AFTER = "drop_after"
    CORRUPT_JPEG = "corrupt_jpeg"
    TRUNCATED_JPEG = "truncated_jpeg"
    WRONG_LENGTH = "wrong_length"
    OVERSIZE = "oversize"
    HTML_ERROR = "html_error"
    LEGACY_FRAMING = "legacy_framing"
    REFUSE = "refuse"
    SLOW = "slow"


#: Kinds whose ``frames`` means "every N-th frame" (the others read it as "after N frames").
PER_FRAME_KINDS = frozenset(
    {FaultKind.CORRUPT_JPEG, FaultKind.TRUNCATED_JPEG, FaultKind.WRONG_LENGTH, FaultKind.OVERSIZE}
)


@dataclass(frozen=True)
class Fault:
    """One fault to inject; see :class:`FaultKind` for what each field means per kind.

    Fields a kind does not read must stay None.

    Example:
        >>> Fault(FaultKind.DROP_AFTER, frames=10)
        Fault(kind=<FaultKind.DROP_AFTER: 'drop_after'>, frames=10, seconds=None, rate=None, size=None, delta=None, status=None)
        >>> parse_fault("stall:seconds=3").seconds
        3.0
    """  # noqa: E501

    kind: FaultKind
    #: After how many frames (STALL, DROP_AFTER, REFUSE) or every how many frames (the per-frame kinds).
    frames: int | None = None
    #: How long a STALL or REFUSE lasts.
    seconds: float | None = None
    #: SLOW: bytes per second.
    rate: int | None = None
    #: Body size in bytes of an altered part: OVERSIZE pads up to it, TRUNCATED_JPEG cuts down to it.
    size: int | None = None
    #: WRONG_LENGTH: added to the true length in the Content-Length header (negative understates).
    delta: int | None = None
    #: HTML_ERROR: the HTTP status code of the error page.
    status: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, FaultKind):
            raise TypeError(f"expected kind to be a FaultKind, got {self.kind!r}")
        allowed = _FIELDS[self.kind]
        for name, value in self._parameters().items():
            if name not in allowed:
                raise ValueError(
                    f"expected only {', '.join(sorted(allowed)) or 'no fields'} for {self.kind.name}, "
                    f"got {name}={value!r}"
                )
        if self.kind is FaultKind.DROP_AFTER and self.frames is None:
            raise ValueError("expected frames (how many frames before the drop) for DROP_AFTER, got None")
        least_frames = 1 if self.kind in PER_FRAME_KINDS else 0
        if self.frames is not None and (isinstance(self.frames, bool) or self.frames < least_frames):
            raise ValueError(f"expected frames >= {least_frames} for {self.kind.name}, got {self.frames!r}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"expected seconds >= 0 for {self.kind.name}, got {self.seconds!r}")
        if self.rate is not None and self.rate < 1:
            raise ValueError(f"expected rate >= 1 byte/s for SLOW, got {self.rate!r}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"expected size >= 1 byte for {self.kind.name}, got {self.size!r}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"expected an HTTP error status 400..599 for HTML_ERROR, got {self.status!r}")

    @property
    def every(self) -> int:
        """For the per-frame kinds: the fault hits frames whose 1-based number is a multiple of this."""
        return self.frames if self.frames is not None else 1

    def __str__(self) -> str:
        """The textual form :func:`parse_fault` reads."""
        params = [f"{name}={value}" for name, value in self._parameters().items()]
        return self.kind.value + (":" + ",".join(params) if params else "")

    def _parameters(self) -> dict[str, int | float]:
        """The fields set besides ``kind``, in declaration order."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "kind"}
        return {name: value for name, value in values.items() if value is not None}


_FIELDS: dict[FaultKind, frozenset[str]] = {
    FaultKind.STALL: frozenset({"frames", "seconds"}),
    FaultKind.DROP_AFTER: frozenset({"frames"}),
    FaultKind.CORRUPT_JPEG: frozenset({"frames"}),
    FaultKind.TRUNCATED_JPEG: frozenset({"frames", "size"}),
    FaultKind.WRONG_LENGTH: frozenset({"frames", "delta"}),
    FaultKind.OVERSIZE: frozenset({"frames", "size"}),
    FaultKind.HTML_ERROR: frozenset({"status"}),
    FaultKind.LEGACY_FRAMING: frozenset(),
    FaultKind.REFUSE: frozenset({"frames", "seconds"}),
    FaultKind.SLOW: frozenset({"rate"}),
}

_FLOAT_FIELDS = frozenset({"seconds"})


def parse_fault(spec: str) -> Fault:
    """Read a fault written as ``kind[:key=value[,key=value]]`` (kind names are case-insensitive).

    Example:
        >>> parse_fault("drop_after:frames=50")
        Fault(kind=<FaultKind.DROP_AFTER: 'drop_after'>, frames=50, seconds=None, rate=None, size=None, delta=None, status=None)
    """  # noqa: E501
    name, _, params = spec.strip().partition(":")
    try:
        kind = FaultKind(name.strip().lower())
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"expected a fault kind ({kinds}), got {name!r}") from None
    ints: dict[str, int] = {}
    floats: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in _FIELDS[kind]:
            allowed = ", ".join(sorted(_FIELDS[kind])) or "no parameters"
            raise ValueError(f"expected key=value with a key among {allowed} for {kind.value}, got {item!r}")
        try:
            if key in _FLOAT_FIELDS:
                floats[key] = float(raw)
            else:
                ints[key] = int(raw)
        except ValueError:
            expected = "a number" if key in _FLOAT_FIELDS else "an integer"
            raise ValueError(f"expected {expected} for {kind.value} {key}, got {raw!r}") from None
    return Fault(
        kind,
        frames=ints.get("frames"),
        seconds=floats.get("seconds"),
        rate=ints.get("rate"),
        size=ints.get("size"),
        delta=ints.get("delta"),
        status=ints.get("status"),
    )


# -- what the per-frame faults do to a JPEG -----------------------------------------------------

# One maximal JPEG comment segment: FFFE, length 0xFFFF (counting its own two bytes), filler.
_COMMENT_SEGMENT = b"\xff\xfe\xff\xff" + b"\x00" * 0xFFFD


def corrupt_jpeg(jpeg: bytes) -> bytes:
    """Flip bits in a run of bytes in the middle of the entropy-coded data; SOI and EOI stay.

    Example:
        >>> bad = corrupt_jpeg(jpeg)  # doctest: +SKIP
        >>> bad[:2], bad[-2:], len(bad) == len(jpeg)  # doctest: +SKIP
        (b'\\xff\\xd8', b'\\xff\\xd9', True)
    """
    if len(jpeg) < 16:
        return jpeg
    sos = jpeg.find(b"\xff\xda")
    begin = sos + 2 if sos >= 0 else 2
    start = begin + (len(jpeg) - 2 - begin) // 2
    end = min(len(jpeg) - 2, start + max(16, len(jpeg) // 16))
    return jpeg[:start] + bytes(b ^ 0x5A for b in jpeg[start:end]) + jpeg[end:]


def truncate_jpeg(jpeg: bytes, size: int | None = None) -> bytes:
    """The first ``size`` bytes (default half), always short of the EOI marker."""
    cut = len(jpeg) // 2 if size is None else size
    return jpeg[: max(0, min(cut, len(jpeg) - 2))]


def pad_jpeg(jpeg: bytes, size: int = DEFAULT_OVERSIZE_BYTES) -> bytes:
    """``jpeg`` grown to at least ``size`` bytes with comment segments after SOI; it still decodes."""
    missing = size - len(jpeg)
    if missing <= 0 or jpeg[:2] != b"\xff\xd8":
        return jpeg
    count = -(-missing // len(_COMMENT_SEGMENT))
    return b"".join((jpeg[:2], _COMMENT_SEGMENT * count, jpeg[2:]))
