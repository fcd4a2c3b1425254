"""How a statistic appears in Prometheus: field metadata read by `espdetect.server.metrics`.

Apart from `espdetect.server.stats` so that modules below the hub (the event sinks) can declare
their statistics without importing it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Final, Literal, NamedTuple

__all__ = ["MetricKind", "MetricSpec", "counter", "gauge", "metric_fields"]

MetricKind = Literal["counter", "gauge"]


class MetricSpec(NamedTuple):
    """How one statistic appears in Prometheus."""

    kind: MetricKind
    #: Metric name without the ``espdetect_`` prefix (a counter also gets ``_total``).
    name: str
    help: str
    #: For a mapping, a NamedTuple or `Percentiles`: the label its keys go under.
    key_label: str | None = None
    #: Fixed labels of this field, for several fields sharing one metric.
    labels: tuple[tuple[str, str], ...] = ()


_METRIC: Final = "metric"


def counter(help: str, *, name: str | None = None) -> dict[str, MetricSpec]:
    """Field metadata: exported as a Prometheus counter (``name`` defaults to the field's)."""
    return {_METRIC: MetricSpec("counter", name or "", help)}


def gauge(
    help: str,
    *,
    name: str | None = None,
    key_label: str | None = None,
    labels: tuple[tuple[str, str], ...] = (),
) -> dict[str, MetricSpec]:
    """Field metadata: exported as a Prometheus gauge."""
    return {_METRIC: MetricSpec("gauge", name or "", help, key_label, labels)}


def metric_fields(cls: type[Any]) -> list[tuple[str, MetricSpec]]:
    """(field name, spec) of every exported field of a statistics class, in declaration order."""
    out = []
    for f in fields(cls):
        spec = f.metadata.get(_METRIC)
        if isinstance(spec, MetricSpec):
            out.append((f.name, spec._replace(name=spec.name or f.name)))
    return out
