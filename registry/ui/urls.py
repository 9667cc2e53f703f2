"""Where each page lives ('/-/' separates a repository name from the view: no name contains it)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

PREFIX = "/ui"


def repository_url(name: str) -> str:
    return f"{PREFIX}/r/{quote(name)}"


def manifest_url(name: str, reference: object) -> str:
    return f"{repository_url(name)}/-/manifest/{quote(str(reference), safe=':')}"


def blob_url(name: str, digest: object, manifest: object = None) -> str:
    url = f"{repository_url(name)}/-/blob/{quote(str(digest), safe=':')}"
    return f"{url}?{urlencode({'manifest': str(manifest)})}" if manifest else url


def delete_url(name: str, reference: object) -> str:
    return f"{repository_url(name)}/-/delete?{urlencode({'reference': str(reference)})}"


def split_repository_path(path: str) -> tuple[str, str | None, str | None]:
    """`<name>[/-/<view>[/<reference>]]` as (name, view, reference)."""
    name, _, rest = path.partition("/-/")
    view, _, reference = rest.partition("/")
    return name, (view or None), (reference or None)


URL_HELPERS = {"repository_url": repository_url, "manifest_url": manifest_url, "blob_url": blob_url,
               "delete_url": delete_url}
