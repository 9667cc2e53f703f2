"""Tag listing and the repository catalog: lexical order and `n`/`last` pagination with Link headers.

The catalog needs a registry of its own (it lists every repository), started on each backend:
on S3 a page is one delimiter listing of the bucket, on the filesystem a directory walk."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from .client import OCI_CONFIG, OCI_MANIFEST, RegistryClient, assert_error, descriptor, digest_of, unique_repo
from .servers import RegistryServer

#: deliberately not in push order, with upper case, digits, dots, dashes and underscores
TAGS = ["v1.10", "latest", "B", "v1.2", "0", "_x", "a", "v1.0", "a-b", "A", "a.b", "a_b", "z" * 128, "9z"]
LINK = re.compile(r'<(?P<url>[^>]+)>;\s*rel="next"')


def next_url(r: requests.Response) -> str | None:
    """The target of the Link rel="next" header, checked to carry both n and last."""
    link = r.headers.get("Link")
    if link is None:
        return None
    match = LINK.fullmatch(link.strip())
    assert match, link
    url = match.group("url")
    query = parse_qs(urlsplit(url).query)
    assert set(query) == {"n", "last"}, url
    return url


def push_tags(client: RegistryClient, repo: str, tags: list[str]) -> None:
    """One manifest carrying every tag, pushed in a single request."""
    config = b"{}"
    client.push_blob(repo, config)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, config),
                       "layers": []}).encode()
    r = client.request("PUT", f"/v2/{repo}/manifests/{digest_of(body)}", params=[("tag", t) for t in tags],
                       data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def tagged(registry: RegistryServer) -> str:
    repo = unique_repo("tags")
    push_tags(RegistryClient(registry.url), repo, TAGS)
    return repo


def list_tags(client: RegistryClient, repo: str, **params: str | int) -> requests.Response:
    r = client.request("GET", f"/v2/{repo}/tags/list", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["name"] == repo
    return r


def follow(client: RegistryClient, first: str) -> tuple[list[str], int]:
    """Every entry reachable by following Link headers from first, and how many pages it took."""
    entries: list[str] = []
    url: str | None = first
    pages = 0
    while url is not None:
        r = client.request("GET", url)
        assert r.status_code == 200, r.text
        document = r.json()
        entries += document.get("tags", document.get("repositories"))
        url = next_url(r)
        pages += 1
        assert pages < 1000
    return entries, pages


# --- tags -----------------------------------------------------------------------------------------


def test_tags_in_lexical_order(client: RegistryClient, tagged: str) -> None:
    r = list_tags(client, tagged)
    assert r.json()["tags"] == sorted(TAGS)
    assert "Link" not in r.headers


def test_tags_n_alone(client: RegistryClient, tagged: str) -> None:
    """n caps the page and, since more remain, a Link points after the last entry returned."""
    r = list_tags(client, tagged, n=4)
    page = sorted(TAGS)[:4]
    assert r.json()["tags"] == page
    query = parse_qs(urlsplit(next_url(r) or "").query)
    assert query == {"n": ["4"], "last": [page[-1]]}
    assert urlsplit(next_url(r) or "").path == f"/v2/{tagged}/tags/list"


def test_tags_last_alone(client: RegistryClient, tagged: str) -> None:
    """last without n returns everything after it, with no Link."""
    ordered = sorted(TAGS)
    r = list_tags(client, tagged, last=ordered[5])
    assert r.json()["tags"] == ordered[6:]
    assert "Link" not in r.headers


def test_tags_last_not_a_tag(client: RegistryClient, tagged: str) -> None:
    """last need not be an existing tag: entries lexically after it follow."""
    r = list_tags(client, tagged, last="a0")
    assert r.json()["tags"] == [t for t in sorted(TAGS) if t > "a0"]
    assert list_tags(client, tagged, last="~").json()["tags"] == []


def test_tags_n_and_last(client: RegistryClient, tagged: str) -> None:
    ordered = sorted(TAGS)
    r = list_tags(client, tagged, n=3, last=ordered[2])
    assert r.json()["tags"] == ordered[3:6]
    assert parse_qs(urlsplit(next_url(r) or "").query) == {"n": ["3"], "last": [ordered[5]]}


@pytest.mark.parametrize("extra", [0, 5])
def test_tags_no_link_on_final_page(client: RegistryClient, tagged: str, extra: int) -> None:
    """n reaching the end (exactly or beyond) returns the rest and no Link."""
    r = list_tags(client, tagged, n=len(TAGS) + extra)
    assert r.json()["tags"] == sorted(TAGS)
    assert "Link" not in r.headers
    ordered = sorted(TAGS)
    r = list_tags(client, tagged, n=2 + extra, last=ordered[-3])
    assert r.json()["tags"] == ordered[-2:]
    assert "Link" not in r.headers


@pytest.mark.parametrize("n", [1, 2, 3, 5, 13])
def test_tags_follow_links(client: RegistryClient, tagged: str, n: int) -> None:
    """Following Link pages from the first yields the full list, each entry once, in order."""
    entries, pages = follow(client, f"/v2/{tagged}/tags/list?n={n}")
    assert entries == sorted(TAGS)
    assert pages == -(-len(TAGS) // n)


def test_tags_n_zero(client: RegistryClient, tagged: str) -> None:
    """n=0 is an empty list and no Link, as the spec requires."""
    r = list_tags(client, tagged, n=0)
    assert r.json()["tags"] == []
    assert "Link" not in r.headers


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "10001", "99999999999999999999", "0x10"])
def test_tags_invalid_n(client: RegistryClient, tagged: str, n: str) -> None:
    assert_error(client.request("GET", f"/v2/{tagged}/tags/list", params={"n": n}), 400,
                 "PAGINATION_NUMBER_INVALID")


def test_tags_largest_n_accepted(client: RegistryClient, tagged: str) -> None:
    assert list_tags(client, tagged, n=10000).json()["tags"] == sorted(TAGS)


def test_tags_unknown_repository(client: RegistryClient) -> None:
    assert_error(client.request("GET", f"/v2/{unique_repo()}/tags/list"), 404, "NAME_UNKNOWN")


def test_tags_follow_deletes(client: RegistryClient) -> None:
    """An untagged tag leaves the list; the repository itself is still known."""
    repo = unique_repo()
    push_tags(client, repo, ["one", "two"])
    assert client.request("DELETE", f"/v2/{repo}/manifests/one").status_code == 202
    assert list_tags(client, repo).json()["tags"] == ["two"]


# --- catalog --------------------------------------------------------------------------------------

NESTED = ["a", "a/b", "a/b/c", "a/0x", "a-b", "a.b/c_d", "m/n/o/p", "z0", "lib/alpine", "lib/busybox", "x__y/z"]


@pytest.fixture
def catalog_client(make_registry: Callable[..., RegistryServer], backend_name: str) -> RegistryClient:
    """A private registry holding exactly the NESTED repositories."""
    client = RegistryClient(make_registry(backend=backend_name).url)
    push_repositories(client, NESTED)
    return client


def push_repositories(client: RegistryClient, repos: list[str]) -> None:
    """One tagged manifest in each repository, pushed 8 at a time (S3 round trips add up)."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda repo: push_tags(RegistryClient(client.url), repo, ["t"]), repos))


def catalog(client: RegistryClient, **params: str | int) -> requests.Response:
    r = client.request("GET", "/v2/_catalog", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    return r


def catalog_order(names: list[str]) -> list[str]:
    """The catalog's order: that of the repositories' `_manifests` keys in the store, where
    `a-b/` sorts before `a/`, and `a/0x/` before `a/_manifests/`."""
    return sorted(names, key=lambda name: name + "/_manifests/")


def test_catalog_empty(make_registry: Callable[..., RegistryServer], backend_name: str) -> None:
    r = catalog(RegistryClient(make_registry(backend=backend_name).url))
    assert r.json() == {"repositories": []}
    assert "Link" not in r.headers


def test_catalog_lists_nested_repositories(catalog_client: RegistryClient) -> None:
    """Repositories nested in other repositories' names are each listed, in key order."""
    r = catalog(catalog_client)
    assert r.json()["repositories"] == catalog_order(NESTED)
    assert "Link" not in r.headers


def test_catalog_blob_only_repository_not_listed(catalog_client: RegistryClient) -> None:
    """A repository with blobs but no manifest is not yet a repository in the catalog."""
    catalog_client.push_blob("only/blobs", b"data")
    assert catalog(catalog_client).json()["repositories"] == catalog_order(NESTED)


def test_catalog_pagination(catalog_client: RegistryClient) -> None:
    ordered = catalog_order(NESTED)
    r = catalog(catalog_client, n=3)
    assert r.json()["repositories"] == ordered[:3]
    assert parse_qs(urlsplit(next_url(r) or "").query) == {"n": ["3"], "last": [ordered[2]]}
    assert urlsplit(next_url(r) or "").path == "/v2/_catalog"

    r = catalog(catalog_client, last=ordered[3])
    assert r.json()["repositories"] == ordered[4:]
    assert "Link" not in r.headers

    r = catalog(catalog_client, n=2, last=ordered[3])
    assert r.json()["repositories"] == ordered[4:6]
    assert parse_qs(urlsplit(next_url(r) or "").query) == {"n": ["2"], "last": [ordered[5]]}

    r = catalog(catalog_client, n=0)
    assert r.json()["repositories"] == []
    assert "Link" not in r.headers

    r = catalog(catalog_client, n=len(NESTED))
    assert r.json()["repositories"] == ordered
    assert "Link" not in r.headers

    for n in (1, 3, 4):
        entries, pages = follow(catalog_client, f"/v2/_catalog?n={n}")
        assert entries == ordered
        assert pages == -(-len(NESTED) // n)


@pytest.mark.parametrize("n", ["-1", "x", "10001"])
def test_catalog_invalid_n(client: RegistryClient, n: str) -> None:
    assert_error(client.request("GET", "/v2/_catalog", params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")


def test_catalog_default_page_size(make_registry: Callable[..., RegistryServer]) -> None:
    """Without n the catalog pages by 100 and links the rest (on the filesystem only: pushing 105
    repositories through moto takes 10 s, and the S3 listing's limit is covered by the tests above)."""
    client = RegistryClient(make_registry().url)
    repos = [f"r{i:03d}" for i in range(105)]
    push_repositories(client, repos)
    r = catalog(client)
    assert r.json()["repositories"] == repos[:100]
    assert parse_qs(urlsplit(next_url(r) or "").query) == {"n": ["100"], "last": [repos[99]]}
    entries, pages = follow(client, "/v2/_catalog")
    assert (entries, pages) == (repos, 2)
