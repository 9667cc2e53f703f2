"""Counters, gauges and histograms for the per-request hot path, exported through prometheus-client.

prometheus-client's own metric objects take a lock and check their state on every update, several
microseconds each; a request updates a dozen. These are plain numbers updated on the event loop (the
only thread that touches them), turned into Prometheus families when scraped, so counting a request
costs well under a microsecond per metric.
"""

from __future__ import annotations

from bisect import bisect_left
from time import perf_counter
from typing import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

Labels = tuple[str, ...]


class Histogram:
    """One label set's observations: a count per bucket (the last one +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def since(self, start: float) -> None:
        """Observe the seconds since `start` (a perf_counter() reading)."""
        elapsed = perf_counter() - start
        self.counts[bisect_left(self.bounds, elapsed)] += 1
        self.sum += elapsed


class Family:
    """A metric with labels: the same name, help and label names, one value per label set."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)

    def collect(self) -> Metric:
        raise NotImplementedError


class Cell:
    """One label set's value; the hot path keeps the cell and adds to it."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Counters(Family):
    kind = CounterMetricFamily

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self.cells: dict[Labels, Cell] = {}

    def cell(self, labels: Labels = ()) -> Cell:
        found = self.cells.get(labels)
        if found is None:
            found = self.cells[labels] = Cell()
        return found

    def inc(self, labels: Labels = (), amount: float = 1) -> None:
        self.cell(labels).value += amount

    def collect(self) -> Metric:
        family = self.kind(self.name, self.documentation, labels=self.labelnames)
        for labels, cell in self.cells.items():
            family.add_metric(list(labels), cell.value)
        return family


class Gauges(Counters):
    kind = GaugeMetricFamily

    def dec(self, labels: Labels = (), amount: float = 1) -> None:
        self.cell(labels).value -= amount


class Histograms(Family):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = sorted(buckets)
        self.children: dict[Labels, Histogram] = {}

    def child(self, labels: Labels) -> Histogram:
        found = self.children.get(labels)
        if found is None:
            found = self.children[labels] = Histogram(self.bounds)
        return found

    def observe(self, labels: Labels, value: float) -> None:
        self.child(labels).observe(value)

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, histogram in self.children.items():
            buckets, total = [], 0
            for bound, count in zip([*map(_le, self.bounds), "+Inf"], histogram.counts):
                total += count
                buckets.append((bound, total))
            family.add_metric(list(labels), buckets, histogram.sum)
        return family


class Sums(Family):
    """A counter that is another family's histogram sums (bytes received: the request sizes' sum)."""

    def __init__(self, name: str, documentation: str, histograms: Histograms) -> None:
        super().__init__(name, documentation, histograms.labelnames)
        self.histograms = histograms

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, histogram in self.histograms.children.items():
            family.add_metric(list(labels), histogram.sum)
        return family


def _le(bound: float) -> str:
    return repr(float(bound))


class Stats(Collector):
    """The families above, as one prometheus-client collector."""

    def __init__(self, *families: Family) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.collect()
