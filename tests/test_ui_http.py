"""The web UI over plain HTTP: headers, cookies, sessions across replicas, ui.enabled, login limits."""

from __future__ import annotations

import uuid
from pathlib import Path

import requests

from registry.tls import write_self_signed

from .auth_helpers import client_for, fresh_address, write_htpasswd
from .browser import ui_login, ui_session
from .client import Image, RegistryClient
from .servers import MakeRegistry

PASSWORDS = {"alice": "alice-pw"}


def htpasswd_config(tmp_path: Path, **http: str) -> dict:
    write_htpasswd(tmp_path / "htpasswd", PASSWORDS)
    config: dict = {"auth": {"htpasswd": {"path": str(tmp_path / "htpasswd")}}}
    if http:
        config["http"] = http
    return config


def test_pages_carry_security_headers_and_a_strict_session_cookie(make_registry: MakeRegistry) -> None:
    server = make_registry()
    r = requests.get(server.url, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"
    assert r.headers["Cache-Control"] == "no-store"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert "<script" not in r.text.split("</head>")[1]  # the one script is the copy buttons' file
    assert requests.get(f"{server.url}/ui/static/copy.js", timeout=30).status_code == 200
    # the API's own paths are untouched
    assert requests.get(f"{server.url}/v2/", timeout=30).headers["Content-Type"] == "application/json"
    assert requests.get(f"{server.url}/v2/no/such/manifests/x", timeout=30).json()["errors"][0]["code"] == \
        "NAME_UNKNOWN"


def test_session_cookie_is_secure_under_tls(make_registry: MakeRegistry, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    write_self_signed(["127.0.0.1"], cert, key)
    server = make_registry(config={"http": {"tls": {"certificate": str(cert), "key": str(key)}}})
    r = requests.get(server.url, timeout=30, verify=str(cert))
    assert "Secure" in r.headers["Set-Cookie"]


def test_ui_enabled_false_leaves_only_the_api(make_registry: MakeRegistry) -> None:
    server = make_registry(config={"ui": {"enabled": False}})
    for path in ("/", "/ui/storage", "/ui/static/ui.css"):
        r = requests.get(f"{server.url}{path}", timeout=30)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NOT_FOUND"
    assert requests.get(f"{server.url}/v2/", timeout=30).status_code == 200


def test_a_session_started_on_one_replica_works_on_another(make_registry: MakeRegistry, tmp_path: Path) -> None:
    """No http.secret: the generated key is kept in the store, which the replicas share."""
    config = htpasswd_config(tmp_path)
    first = make_registry(config=config)
    second = make_registry(root=first.root, config=config)
    session = ui_login(first.url, "alice", PASSWORDS["alice"])
    assert 'data-test="user">alice<' in session.get(second.url, timeout=30).text


def test_http_secret_signs_sessions(make_registry: MakeRegistry, tmp_path: Path) -> None:
    """With http.secret, replicas on different stores still share sessions (they share the secret)."""
    config = htpasswd_config(tmp_path, secret="shared-" + uuid.uuid4().hex)
    first, second = make_registry(config=config), make_registry(config=config)
    session = ui_login(first.url, "alice", PASSWORDS["alice"])
    assert 'data-test="user">alice<' in session.get(second.url, timeout=30).text
    stranger = make_registry(config=htpasswd_config(tmp_path, secret="another"))
    assert 'data-test="user"' not in session.get(stranger.url, timeout=30).text


def test_login_needs_the_forms_token_and_failures_are_limited(make_registry: MakeRegistry, tmp_path: Path) -> None:
    server = make_registry(config=htpasswd_config(tmp_path))
    session, csrf = ui_session(server.url)
    r = session.post(f"{server.url}/ui/login", data={"username": "alice", "password": PASSWORDS["alice"]},
                     allow_redirects=False, timeout=30)
    assert r.status_code == 403  # no CSRF token: a login forced on the visitor from elsewhere
    address = fresh_address()
    adapter = client_for(server.url, address=address).session.get_adapter(server.url)
    session.mount("http://", adapter)
    statuses = [session.post(f"{server.url}/ui/login", data={"csrf": csrf, "username": "alice", "password": "no"},
                             allow_redirects=False, timeout=30).status_code for _ in range(11)]
    assert statuses == [401] * 10 + [429]
    # the limit is the API's: this address's Basic credentials are refused too
    assert client_for(server.url, auth=("alice", PASSWORDS["alice"]), address=address).request(
        "GET", "/v2/").status_code == 429


def test_delete_refused_when_deletes_are_disabled(make_registry: MakeRegistry) -> None:
    server = make_registry(args=["--no-delete"])
    client = RegistryClient(server.url)
    Image([uuid.uuid4().bytes]).push(client, "team/app", "1.0")
    session = requests.Session()
    page = session.get(f"{server.url}/ui/r/team/app", timeout=30)
    assert "/-/delete" not in page.text
    assert session.get(f"{server.url}/ui/r/team/app/-/delete?reference=1.0", timeout=30).status_code == 405
    r = session.post(f"{server.url}/ui/r/team/app/-/delete", data={"reference": "1.0"}, timeout=30)
    assert r.status_code == 405 and "storage.delete.enabled" in r.text
    assert client.request("GET", "/v2/team/app/manifests/1.0").status_code == 200


def test_odd_page_numbers_show_the_first_page(make_registry: MakeRegistry) -> None:
    """Found writing openapi.yaml: `?page=²` (which isdigit() accepts) and numbers of 5,000 digits were a 500."""
    server = make_registry()
    Image([uuid.uuid4().bytes]).push(RegistryClient(server.url), "team/app", "1.0")
    for page in ("²", "9" * 5000, "0", "-1", "x"):
        r = requests.get(f"{server.url}/ui/r/team/app", params={"page": page}, timeout=30)
        assert r.status_code == 200 and "1.0" in r.text, (page[:10], r.status_code)


def test_unreadable_form_is_a_400_page(make_registry: MakeRegistry, tmp_path: Path) -> None:
    """What schemathesis found in the token service held for the UI's forms: a multipart form without its
    boundary (and other unreadable bodies) was a 500."""
    server = make_registry(config=htpasswd_config(tmp_path))
    session, _ = ui_session(server.url)
    for content_type in ("multipart/form-data", "application/x-www-form-urlencoded; charset=no-such-charset"):
        r = session.post(f"{server.url}/ui/login", data=b"username=alice", headers={"Content-Type": content_type},
                         allow_redirects=False, timeout=30)
        assert r.status_code == 400 and r.headers["Content-Type"].startswith("text/html"), (content_type, r.text)


def test_static_files_not_shipped_are_the_404_envelope(make_registry: MakeRegistry) -> None:
    """Found by schemathesis: a missing static file was an empty 404 (application/octet-stream), and their
    directory a plain-text 403; both are the API's 404 NOT_FOUND now."""
    server = make_registry()
    for path in ("/ui/static/0", "/ui/static/", "/ui/static/..%2f__init__.py", "/ui/static/templates"):
        r = requests.get(f"{server.url}{path}", timeout=30)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NOT_FOUND", (path, r.status_code, r.text)
    for method in ("GET", "HEAD"):
        r = requests.request(method, f"{server.url}/ui/static/ui.css", timeout=30)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/css")
