"""The storage page: what is stored, what the images add up to, and what sharing saves.

Charts are SVG drawn here (the template writes the shapes): bars scaled to the largest
value, so the page needs no script and no image files.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .format import short, size
from .pages import UI, render
from .urls import blob_url, repository_url
from .viewer import Viewer

#: rows in the per-repository table and bars in each chart
TABLE_ROWS = 100
CHART_BARS = 10
#: the charts' drawing area, in SVG user units
LABEL_WIDTH, BAR_WIDTH, ROW_HEIGHT = 260, 420, 24


@dataclass
class Bar:
    label: str
    href: str | None
    #: (width, css class) of each stacked segment
    segments: list[tuple[float, str]]
    caption: str
    y: int


def bars(items: list[tuple[str, str | None, list[tuple[int, str]], str]]) -> list[Bar]:
    """Horizontal stacked bars for (label, link, [(value, class)], caption), scaled to the largest total."""
    largest = max((sum(v for v, _ in parts) for _, _, parts, _ in items), default=0) or 1
    return [Bar(label, href, [(BAR_WIDTH * value / largest, css) for value, css in parts], caption, i * ROW_HEIGHT)
            for i, (label, href, parts, caption) in enumerate(items)]


async def storage(request: web.Request, ui: UI, viewer: Viewer) -> web.StreamResponse:
    snapshot = await ui.snapshots.get()
    if snapshot is None:
        return render(request, viewer, "storage.html", snapshot=None)
    repositories = [u for u in snapshot.usage.repositories if viewer.may(u.name)]
    repositories.sort(key=lambda u: (-u.total, u.name))
    largest = bars([(u.name, repository_url(u.name), [(u.unique, "unique"), (u.shared, "shared")],
                     f"{size(u.total)} ({size(u.shared)} shared)") for u in repositories[:CHART_BARS]])
    # a layer is shown only with a repository the viewer may see that uses it
    shared_layers = []
    for digest, blob in snapshot.sharing.most_shared(CHART_BARS * 5):
        where = next((r for r in blob.some_repositories if viewer.may(r)), None)
        if where is not None and len(shared_layers) < CHART_BARS:
            shared_layers.append((short(digest), blob_url(where, digest), [(blob.images, "shared")],
                                  f"{blob.images} images, {blob.repositories} repositories, {size(blob.size)}"))
    layers = bars(shared_layers)
    everything = len(repositories) == len(snapshot.usage.repositories)
    return render(request, viewer, "storage.html", snapshot=snapshot, repositories=repositories[:TABLE_ROWS],
                  visible=len(repositories), largest=largest, layers=layers, everything=everything,
                  chart={"label": LABEL_WIDTH, "bar": BAR_WIDTH, "row": ROW_HEIGHT})
