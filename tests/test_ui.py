"""The web UI in a real browser (chromium through Playwright), on real registry processes.

Images are pushed with skopeo (a multi-arch index, an image with labels) and the API
(referrers, many tags); what the pages show is checked against what the API answers.
Screenshots of the main pages land in screenshots/ (ignored by git).
"""

from __future__ import annotations

import threading
import uuid
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from playwright.sync_api import expect

from .auth_helpers import client_for, write_htpasswd
from .browser import Browser, screenshot, ui_login
from .client import OCI_INDEX, Image, RegistryClient, unique_repo
from .oci_layout import ACCEPT_ALL, LayoutBuilder, copy, multi_arch_index, small_files, small_image
from .servers import MakeRegistry, RegistryServer, free_port

ADMIN, ALICE, BOB = ("admin", "admin-pw"), ("alice", "alice-pw"), ("bob", "bob-pw")
ACCESS = {"rules": [
    {"repositories": ["*"], "users": ["admin"], "actions": ["*"]},
    {"repositories": ["team-a/*"], "users": ["alice"], "actions": ["pull", "push", "delete"]},
    {"repositories": ["team-b/*"], "users": ["bob"], "actions": ["pull"]},
    {"repositories": ["public/*"], "anonymous": True, "actions": ["pull"]},
]}


def shown_repositories(page: Any) -> list[str]:
    return page.locator("a[data-test=repository]").all_inner_texts()


def search(page: Any, url: str, text: str) -> list[str]:
    """The repositories a search shows, following "Search further" (each page reads a bounded part of the
    catalog, so in a large one the matches may be some pages on)."""
    page.goto(f"{url}/?q={text}")
    while True:
        expect(page.locator("h1")).to_have_text("Repositories")
        found = shown_repositories(page)
        further = page.locator("a[rel=next]")
        if found or further.count() == 0:
            return found
        further.click()


def test_click_through_index_platform_layer_and_referrer(registry: RegistryServer, browser: Browser,
                                                         tmp_path: Path) -> None:
    client = RegistryClient(registry.url)
    repo = unique_repo("ui")
    index = multi_arch_index(tmp_path / "index", "multi")
    copy(index.ref("multi"), f"docker://{registry.host}/{repo}:multi", "--all")
    base = small_image(tmp_path / "base", "v1")
    copy(base.ref("v1"), f"docker://{registry.host}/{repo}:base")
    base_digest, base_body = base.manifest("v1")
    signature = Image([uuid.uuid4().bytes], subject=base_body)
    signature.push(client, repo)

    api = client.request("GET", f"/v2/{repo}/manifests/multi", headers={"Accept": ACCEPT_ALL})
    index_digest = api.headers["Docker-Content-Digest"]
    arm = next(m for m in api.json()["manifests"] if m["platform"]["architecture"] == "arm64")
    arm_layers = client.request("GET", f"/v2/{repo}/manifests/{arm['digest']}",
                                headers={"Accept": ACCEPT_ALL}).json()["layers"]
    first_layer = client.request("HEAD", f"/v2/{repo}/blobs/{arm_layers[0]['digest']}")

    def steps(page: Any) -> None:
        assert search(page, registry.url, repo.split("/")[1]) == [repo]
        page.click("a[data-test=repository]")
        expect(page.locator("[data-test=repository-name]")).to_have_text(repo)
        row = page.locator("tr[data-tag=multi]")
        expect(row).to_contain_text("index")
        expect(row).to_contain_text("linux/amd64, linux/arm64")
        screenshot(page, f"repository-{registry.backend}")
        row.locator("a[data-test=tag]").click()
        expect(page.locator("[data-test=digest]")).to_have_attribute("data-digest", index_digest)
        expect(page.locator("[data-test=media-type]")).to_have_text(OCI_INDEX)
        expect(page.locator("#pull")).to_contain_text(f"docker pull {registry.host}/{repo}:multi")
        screenshot(page, f"index-{registry.backend}")

        page.click("a[data-test=platform]:text-is('linux/arm64')")
        expect(page.locator("[data-test=digest]")).to_have_attribute("data-digest", arm["digest"])
        expect(page.locator("#config")).to_contain_text("linux/arm64")
        layers = page.locator("#layers a[data-test=layer]")
        expect(layers).to_have_count(len(arm_layers))
        sizes = page.locator("#layers td[data-bytes]").evaluate_all("cells => cells.map(c => +c.dataset.bytes)")
        assert sizes == [layer["size"] for layer in arm_layers]
        screenshot(page, f"image-{registry.backend}")

        layers.first.click()
        expect(page.locator("[data-test=digest]")).to_contain_text(arm_layers[0]["digest"])
        expect(page.locator("[data-test=size]")).to_have_attribute("data-bytes", first_layer.headers["Content-Length"])

        page.goto(f"{registry.url}/ui/r/{repo}/-/manifest/base")
        expect(page.locator("[data-test=digest]")).to_have_attribute("data-digest", base_digest)
        referrer = page.locator("a[data-test=referrer]")
        expect(referrer).to_have_count(1)
        expect(page.locator("h3", has_text="application/vnd.example.signature")).to_be_visible()
        referrer.click()
        expect(page.locator("[data-test=digest]")).to_have_attribute("data-digest", signature.digest)
        page.click("[data-test=subject]")
        expect(page.locator("[data-test=digest]")).to_have_attribute("data-digest", base_digest)

    browser.visit(steps)


def test_a_thousand_tags_paginate_filter_and_sort(make_registry: MakeRegistry, browser: Browser,
                                                  tmp_path: Path) -> None:
    server = make_registry()
    client = RegistryClient(server.url)
    layout = small_image(tmp_path / "image", "v1")
    copy(layout.ref("v1"), f"docker://{server.host}/big/tags:t0000")
    digest, body = layout.manifest("v1")
    for i in range(1, 1000):
        assert client.push_manifest("big/tags", f"t{i:04d}", body).status_code == 201
    assert client.push_manifest("big/tags", "t0500", body).status_code == 201  # set again: the latest

    def steps(page: Any) -> None:
        page.goto(f"{server.url}/ui/r/big/tags")
        expect(page.locator("[data-test=page]")).to_have_text("Page 1 of 10")
        tags = page.locator("a[data-test=tag]")
        expect(tags).to_have_count(100)
        expect(tags.first).to_have_text("t0000")
        page.click("a[rel=next]")
        expect(page.locator("[data-test=page]")).to_have_text("Page 2 of 10")
        expect(tags.first).to_have_text("t0100")
        page.click("a[data-test=sort-time]")
        expect(tags.first).to_have_text("t0500")
        page.fill("input[name=q]", "t099")
        page.press("input[name=q]", "Enter")
        expect(tags).to_have_count(10)
        assert sorted(tags.all_inner_texts()) == [f"t099{i}" for i in range(10)]
        expect(page.locator("tr[data-tag=t0990]")).to_contain_text(digest[:19])

    browser.visit(steps)


def test_catalog_search_and_pages(make_registry: MakeRegistry, browser: Browser) -> None:
    server = make_registry()
    client = RegistryClient(server.url)
    image = Image([b"shared layer " + uuid.uuid4().bytes])
    names = [f"org/app{i:03d}" for i in range(120)] + ["org/needle-one", "other/needle-two"]
    image.push(client, names[0], "latest")
    for name in names[1:]:
        for digest in image.blobs:
            assert client.request("POST", f"/v2/{name}/blobs/uploads/",
                                  params={"mount": digest, "from": names[0]}).status_code == 201
        assert client.push_manifest(name, "latest", image.manifest).status_code == 201
    listed: list[str] = []
    path: str | None = "/v2/_catalog?n=1000"
    while path:
        r = client.request("GET", path)
        listed += r.json()["repositories"]
        path = r.headers["Link"].split(";")[0].strip("<>") if "Link" in r.headers else None

    def steps(page: Any) -> None:
        page.goto(server.url)
        shown: list[str] = []
        while True:
            expect(page.locator("#repositories")).to_be_visible()
            shown += shown_repositories(page)
            following = page.locator("a[rel=next]")
            if following.count() == 0:
                break
            following.click()
        assert shown == listed  # every repository once, in the catalog's order
        page.fill("input[name=q]", "NEEDLE")
        page.press("input[name=q]", "Enter")
        expect(page.locator("a[data-test=repository]")).to_have_text(["org/needle-one", "other/needle-two"])
        page.fill("input[name=q]", "no-such-thing")
        page.press("input[name=q]", "Enter")
        expect(page.locator("[data-test=empty]")).to_contain_text("No repository matching")

    browser.visit(steps)


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    base = tmp_path_factory.mktemp("ui-htpasswd")
    write_htpasswd(base / "htpasswd", dict([ADMIN, ALICE, BOB]))
    config = {"auth": {"htpasswd": {"path": str(base / "htpasswd"), "realm": "ui"}, "access": ACCESS}}
    with RegistryServer(base / "data", base / "server.log", config) as server:
        admin = client_for(server.url, auth=ADMIN)
        for name in ("team-a/one", "team-a/two", "team-b/one", "public/tools"):
            Image([uuid.uuid4().bytes]).push(admin, name, "latest")
        yield server


def test_htpasswd_login_shows_only_what_the_user_may_pull(htpasswd_registry: RegistryServer,
                                                          browser: Browser) -> None:
    url = htpasswd_registry.url

    def steps(page: Any) -> None:
        page.goto(url)
        expect(page.locator("a[data-test=repository]")).to_have_text(["public/tools"])
        page.click("text=Log in")
        page.fill("input[name=username]", "bob")
        page.fill("input[name=password]", "wrong")
        page.click("button:text-is('Log in')")
        expect(page.locator("[data-test=error]")).to_contain_text("wrong user name, password or token")
        page.fill("input[name=username]", "bob")
        page.fill("input[name=password]", BOB[1])
        screenshot(page, "login")
        page.click("button:text-is('Log in')")
        expect(page.locator("[data-test=user]")).to_have_text("bob")
        expect(page.locator("a[data-test=repository]")).to_have_text(["public/tools", "team-b/one"])
        page.click("a[data-test=repository]:text-is('team-b/one')")
        expect(page.locator("a.danger")).to_have_count(0)  # bob may pull, not delete
        response = page.goto(f"{url}/ui/r/team-a/one")
        assert response.status == 404  # as if it did not exist
        response = page.goto(f"{url}/ui/r/team-a/one/-/manifest/latest")
        assert response.status == 404
        page.goto(f"{url}/ui/storage")
        assert sorted(page.locator("#usage a").all_inner_texts()) == ["public/tools", "team-b/one"]
        expect(page.locator("#totals")).to_have_count(0)  # registry-wide figures are for those who see all
        page.click("button:text-is('Log out')")
        expect(page).to_have_url(f"{url}/ui/login")
        page.goto(url)
        expect(page.locator("a[data-test=repository]")).to_have_text(["public/tools"])

    browser.visit(steps)


def test_a_session_ends_with_its_user_and_a_forged_cookie_is_nobody(htpasswd_registry: RegistryServer) -> None:
    path = Path(htpasswd_registry.config["auth"]["htpasswd"]["path"])
    users = path.read_text()
    write_htpasswd(path, {"carol": "carol-pw"})
    path.write_text(users + path.read_text())
    session = ui_login(htpasswd_registry.url, "carol", "carol-pw")
    assert 'data-test="user">carol<' in session.get(htpasswd_registry.url).text
    forged = requests.Session()
    cookie = session.cookies["registry_ui_session"]
    forged.cookies.set("registry_ui_session", cookie.replace(cookie.split(".")[0], cookie.split(".")[0][:-2] + "AA"))
    assert 'data-test="user"' not in forged.get(htpasswd_registry.url).text
    path.write_text(users)  # carol removed: her session ends at once
    assert 'data-test="user"' not in session.get(htpasswd_registry.url).text


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    base = tmp_path_factory.mktemp("ui-token")
    write_htpasswd(base / "htpasswd", dict([ADMIN, ALICE, BOB]))
    config = {"auth": {"htpasswd": {"path": str(base / "htpasswd")}, "token": {"builtin": True},
                       "access": ACCESS}}
    with RegistryServer(base / "data", base / "server.log", config) as server:
        token = requests.get(f"{server.url}/auth/token", auth=ADMIN, timeout=30, params={
            "service": "registry", "scope": [f"repository:{n}:pull,push" for n in ("team-a/one", "team-a/two")]})
        admin = client_for(server.url, token=token.json()["token"])
        for name in ("team-a/one", "team-a/two"):
            Image([uuid.uuid4().bytes]).push(admin, name, "latest")
        yield server


def test_token_mode_password_and_pasted_token_logins(token_registry: RegistryServer, browser: Browser) -> None:
    url = token_registry.url
    narrow = requests.get(f"{url}/auth/token", auth=ALICE, timeout=30,
                          params={"service": "registry", "scope": "repository:team-a/two:pull"}).json()["token"]

    def with_password(page: Any) -> None:
        page.goto(url)
        page.click("text=Log in")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", ALICE[1])
        page.click("button:text-is('Log in')")
        expect(page.locator("a[data-test=repository]")).to_have_text(["team-a/one", "team-a/two"])

    def with_token(page: Any) -> None:
        page.goto(f"{url}/ui/login")
        page.fill("textarea[name=token]", "not.a.token")
        page.click("button:text-is('Log in')")
        expect(page.locator("[data-test=error]")).to_be_visible()
        page.fill("textarea[name=token]", narrow)
        page.click("button:text-is('Log in')")
        expect(page.locator("[data-test=user]")).to_have_text("alice")
        expect(page.locator("a[data-test=repository]")).to_have_text(["team-a/two"])  # the token's grant only
        assert page.goto(f"{url}/ui/r/team-a/one").status == 404

    browser.visit(with_password)
    browser.visit(with_token)


def test_delete_a_tag_then_the_manifest_with_confirmation(make_registry: MakeRegistry, backend_name: str,
                                                         browser: Browser) -> None:
    server = make_registry(backend=backend_name)
    client = RegistryClient(server.url)
    image = Image([uuid.uuid4().bytes])
    image.push(client, "team/app", "1.0", "stable")

    def steps(page: Any) -> None:
        page.goto(f"{server.url}/ui/r/team/app")
        page.locator("tr[data-tag='1.0'] a.danger").click()
        expect(page.locator("#confirm")).to_contain_text("removes tag 1.0")
        screenshot(page, f"delete-confirm-{backend_name}")
        assert client.request("GET", "/v2/team/app/manifests/1.0").status_code == 200  # nothing gone yet
        page.click("[data-test=confirm-delete]")
        expect(page.locator("[data-test=notice]")).to_have_text("Deleted 1.0.")
        expect(page.locator("a[data-test=tag]")).to_have_text(["stable"])
        page.click("a[data-test=tag]")
        page.click("[data-test=delete-manifest]")
        expect(page.locator("#confirm")).to_contain_text("and with it the tag stable")
        page.click("[data-test=confirm-delete]")
        # its only manifest gone, the repository has no page (as alike on every backend): back to the catalog
        expect(page.locator("[data-test=notice]")).to_contain_text(f"Deleted team/app@{image.digest}")

    browser.visit(steps)
    assert client.request("GET", "/v2/team/app/manifests/1.0").status_code == 404
    assert client.request("GET", f"/v2/team/app/manifests/{image.digest}").status_code == 404


def test_forged_cross_site_post_is_refused(make_registry: MakeRegistry, browser: Browser, tmp_path: Path) -> None:
    server = make_registry()
    client = RegistryClient(server.url)
    Image([uuid.uuid4().bytes]).push(client, "team/app", "1.0")
    # another site: "localhost" is not the registry's "127.0.0.1", so the browser treats it as cross-site
    (tmp_path / "evil.html").write_text(
        f'<form method="post" action="{server.url}/ui/r/team/app/-/delete">'
        '<input type="hidden" name="reference" value="1.0"><input type="hidden" name="csrf" value="guess">'
        '<button id="go">win a prize</button></form>')
    handler = lambda *args: SimpleHTTPRequestHandler(*args, directory=str(tmp_path))  # noqa: E731
    evil = HTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()

    def steps(page: Any) -> str:
        page.goto(f"{server.url}/ui/r/team/app")  # the victim has a session with the registry
        page.goto(f"http://localhost:{evil.server_address[1]}/evil.html")
        with page.expect_navigation() as navigation:
            page.click("#go")
        response = navigation.value
        assert response is not None and response.status == 403
        return page.content()

    try:
        assert "refused" in browser.visit(steps)
    finally:
        evil.shutdown()
        evil.server_close()
    assert client.request("GET", "/v2/team/app/manifests/1.0").status_code == 200
    # the same form from a session of the registry's own pages, but without its CSRF token
    session = requests.Session()
    session.get(server.url, timeout=30)
    r = session.post(f"{server.url}/ui/r/team/app/-/delete", data={"reference": "1.0", "csrf": "guess"}, timeout=30)
    assert r.status_code == 403
    assert client.request("GET", "/v2/team/app/manifests/1.0").status_code == 200


def test_markup_in_labels_and_annotations_never_runs(make_registry: MakeRegistry, browser: Browser,
                                                     tmp_path: Path) -> None:
    server = make_registry()
    hostile = {
        "org.example.script": "<script>window.__ran = 'label'</script>",
        "org.example.attr": "\"><img src=x onerror=\"window.__ran='attribute'\">",
    }
    builder = LayoutBuilder(tmp_path / "hostile")
    builder.tag(builder.add_image([builder.add_layer(small_files())], labels=hostile,
                                  annotations={"org.example.note": "<script>window.__ran = 'annotation'</script>"}),
                "v1")
    copy(builder.finish().ref("v1"), f"docker://{server.host}/team/hostile:v1")

    def steps(page: Any) -> None:
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{server.url}/ui/r/team/hostile/-/manifest/v1")
        expect(page.locator("#labels")).to_contain_text(hostile["org.example.script"])
        expect(page.locator("#labels")).to_contain_text(hostile["org.example.attr"])
        expect(page.locator("#annotations")).to_contain_text("<script>window.__ran = 'annotation'</script>")
        expect(page.locator("#raw")).to_contain_text("<script>")
        assert page.evaluate("window.__ran") is None
        assert page.locator("main script, main img").count() == 0
        assert dialogs == []

    browser.visit(steps)


def test_storage_page_adds_up_images_and_sharing(make_registry: MakeRegistry, backend_name: str,
                                                 browser: Browser) -> None:
    server = make_registry(backend=backend_name)
    client = RegistryClient(server.url)
    base_layer = uuid.uuid4().bytes * 500
    first = Image([base_layer, uuid.uuid4().bytes * 100])
    second = Image([base_layer, uuid.uuid4().bytes * 200])
    first.push(client, "team/one", "1")
    second.push(client, "team/two", "1")
    first.push(client, "team/three", "1")  # the same image in a second repository
    stored = {**first.content, **second.content}
    images = first.size + second.size + first.size

    def steps(page: Any) -> None:
        page.goto(f"{server.url}/ui/storage")  # reloads itself until the first snapshot is there
        expect(page.locator("[data-test=stored]")).to_have_attribute("data-bytes", str(sum(stored.values())),
                                                                     timeout=60_000)
        expect(page.locator("[data-test=images]")).to_have_attribute("data-bytes", str(images))
        expect(page.locator("[data-test=saved]")).to_have_attribute("data-bytes",
                                                                    str(images - sum(stored.values())))
        expect(page.locator("#largest svg rect")).not_to_have_count(0)
        expect(page.locator("#most-shared")).to_contain_text("3 images, 3 repositories")
        screenshot(page, f"storage-{backend_name}")
        page.goto(f"{server.url}/ui/r/team/two/-/manifest/1")
        expect(page.locator("#layers [data-test=shared]").first).to_have_text(
            "2 other images, 2 other repositories")
        expect(page.locator("#layers [data-test=shared]").nth(1)).to_have_text(
            "0 other images, 0 other repositories")

    browser.visit(steps)


def test_screenshots_of_the_catalog(registry: RegistryServer, browser: Browser) -> None:
    """The first page as a new user sees it (README's picture)."""

    def steps(page: Any) -> None:
        page.goto(registry.url)
        expect(page.locator("h1")).to_have_text("Repositories")
        screenshot(page, f"catalog-{registry.backend}")

    browser.visit(steps)
