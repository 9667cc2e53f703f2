"""Combining rounds, judging targets, and printing the table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .scenarios import Metric


@dataclass
class Result:
    metric: Metric
    samples: dict[str, list[float]] = field(default_factory=lambda: {"reference": [], "ours": []})

    def figure(self, side: str) -> float | None:
        values = self.samples[side]
        if not values:
            return None
        return max(values) if self.metric.aggregate == "max" else statistics.median(values)

    @property
    def ratio(self) -> float | None:
        """Ours over the reference: the median of the rounds' own ratios, since each round ran
        the two back to back and so under the same machine load; for peaks, the worst over the worst."""
        refs, ours = self.samples["reference"], self.samples["ours"]
        if not refs or not ours or 0 in refs:
            return None
        if self.metric.aggregate == "median" and len(refs) == len(ours):
            return statistics.median(o / r for o, r in zip(ours, refs))
        return max(ours) / max(refs)

    @property
    def target(self) -> str:
        m = self.metric
        targets = []
        if m.max_ours is not None:
            targets.append(f"< {m.max_ours:g} {m.unit}")
        if m.target_ratio is not None:
            targets.append(f">= {m.target_ratio:g}x")
        if m.max_ratio is not None:
            targets.append(f"<= {m.max_ratio:g}x")
        return ", ".join(targets) or "report"

    @property
    def verdict(self) -> str:
        m = self.metric
        ours, ratio = self.figure("ours"), self.ratio
        checks = []
        if m.max_ours is not None:
            checks.append(None if ours is None else ours < m.max_ours)
        if m.target_ratio is not None:
            checks.append(None if ratio is None else ratio >= m.target_ratio)
        if m.max_ratio is not None:
            checks.append(None if ratio is None else ratio <= m.max_ratio)
        if not checks:
            return ""
        if None in checks:
            return "-"
        return "PASS" if all(checks) else "MISS"

    def as_json(self) -> dict[str, object]:
        m = self.metric
        return {
            "key": m.key, "label": m.label, "unit": m.unit, "higher_is_better": m.higher_is_better,
            "aggregate": m.aggregate, "reference": self.figure("reference"), "ours": self.figure("ours"),
            "samples": self.samples, "ratio": self.ratio, "target": self.target, "verdict": self.verdict,
        }


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def table(results: list[Result]) -> str:
    header = ("scenario", "unit", "reference", "ours", "ours/ref", "target", "result")
    rows = []
    for r in results:
        unit = r.metric.unit + ("" if r.metric.higher_is_better else " (lower is better)")
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        rows.append((r.metric.label, unit, _number(r.figure("reference")), _number(r.figure("ours")),
                     ratio, r.target, r.verdict))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    right = {2, 3, 4}

    def line(row: tuple[str, ...]) -> str:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return " | ".join(cells).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
