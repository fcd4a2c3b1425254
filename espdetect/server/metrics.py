"""``/metrics``: a Prometheus collector producing metrics from the typed statistics of ``/stats``.

Which statistics are exported, under what name and with what help text is declared on the
fields of `espdetect.server.stats` (`counter`, `gauge`); this module only walks them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from espdetect.server.camera import FrameCounts
from espdetect.server.event_service import EventCounters
from espdetect.server.metric_spec import MetricSpec, metric_fields
from espdetect.server.notify import SinkStats
from espdetect.server.stats import (
    REMOTE_METRICS,
    AuthStats,
    CameraStats,
    DetectorStats,
    HubStats,
    ProcessStats,
    json_key,
)
from espdetect.stats import Percentiles

__all__ = ["PREFIX", "StatsCollector", "make_registry"]

#: Every metric's name starts with this.
PREFIX = "espdetect_"


def _quantile(key: str) -> str:
    """``p95`` -> ``0.95`` (the Prometheus convention for quantile labels)."""
    return str(int(key[1:]) / 100)


def _samples(spec: MetricSpec, value: Any) -> Iterator[tuple[list[str], float]]:
    """(label values after the fixed ones, number) of one field's value."""
    fixed = [v for _, v in spec.labels]
    if isinstance(value, Percentiles):
        for key, number in value._asdict().items():
            if number is not None:
                yield [*fixed, _quantile(key)], number
    elif isinstance(value, FrameCounts):
        for key, number in value._asdict().items():
            yield [*fixed, json_key(key)], float(number)
    elif isinstance(value, Mapping):
        for key, number in value.items():
            yield [*fixed, str(key)], float(number)
    elif value is not None:  # a gauge with no samples yet is left out, not reported as 0
        yield fixed, float(value)


class _Families:
    """Metric families by name, created on first use (several fields may feed one)."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def add(self, spec: MetricSpec, labels: list[str], label_values: list[str], value: Any) -> None:
        names = [*labels, *(name for name, _ in spec.labels)]
        if spec.key_label is not None:
            names.append(spec.key_label)
        family = self.families.get(spec.name)
        if family is None:
            make: Callable[..., Metric] = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = self.families[spec.name] = make(PREFIX + spec.name, spec.help, labels=names)
        for extra, number in _samples(spec, value):
            family.add_metric([*label_values, *extra], number)  # type: ignore[attr-defined]


class StatsCollector(Collector):
    """Prometheus collector calling ``snapshot()`` at scrape time.

    Example:
        >>> registry = make_registry(lambda: hub_stats(hub))  # doctest: +SKIP
    """

    def __init__(self, snapshot: Callable[[], HubStats]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        stats = self.snapshot()
        families = _Families()
        for name, spec in metric_fields(ProcessStats):
            families.add(spec, [], [], getattr(stats.process, name))
        for name, spec in metric_fields(HubStats):
            families.add(spec, [], [], getattr(stats, name))
        model = stats.detector
        for name, spec in metric_fields(DetectorStats):
            families.add(spec, [], [], getattr(model, name))
        remote = model.remote
        if remote is not None:
            for name, spec in REMOTE_METRICS.items():
                families.add(spec, ["app"], [remote.app], getattr(remote, name))
        if stats.auth is not None:
            for name, spec in metric_fields(AuthStats):
                families.add(spec, [], [], getattr(stats.auth, name))
        if stats.events is not None:
            for name, spec in metric_fields(EventCounters):
                families.add(spec, [], [], getattr(stats.events, name))
            sink_specs = metric_fields(SinkStats)
            for sink, sink_stats in stats.events.sinks.items():
                for name, spec in sink_specs:
                    families.add(spec, ["sink"], [sink], getattr(sink_stats, name))
        camera_specs = metric_fields(CameraStats)
        for cam_id, cam in stats.cameras.items():
            for name, spec in camera_specs:
                families.add(spec, ["camera"], [cam_id], getattr(cam, name))
        yield from families.families.values()


def make_registry(snapshot: Callable[[], HubStats]) -> CollectorRegistry:
    """A registry of its own for one app (several apps in one process never share metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(snapshot))
    return registry
