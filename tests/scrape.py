"""Prometheus metrics read the way Prometheus reads them: scraped over HTTP, parsed by prometheus-client's parser."""

from __future__ import annotations

import time
from typing import Iterator

import requests
from prometheus_client.parser import text_string_to_metric_families


class Samples:
    """Every sample of one scrape, by name and labels."""

    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 when there are none)."""
        wanted = set(labels.items())
        return sum(v for key, v in self.samples.get(name, {}).items() if wanted <= key)

    def labelled(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        for key, value in self.samples.get(name, {}).items():
            yield dict(key), value

    def __contains__(self, name: str) -> bool:
        return name in self.samples


def scrape_after(url: str, name: str, minimum: float, timeout: float = 10, path: str = "/metrics",
                 **labels: str) -> Samples:
    """A scrape in which `name` (with labels) has reached minimum: a request is counted once its
    answer has been sent, which may be a moment after the client has it."""
    deadline = time.monotonic() + timeout
    while (samples := scrape(url, path)).value(name, **labels) < minimum:
        assert time.monotonic() < deadline, f"{name}{labels} below {minimum} after {timeout}s"
        time.sleep(0.05)
    return samples


def scrape(url: str, path: str = "/metrics") -> Samples:
    r = requests.get(f"{url}{path}", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    return Samples(r.text)
