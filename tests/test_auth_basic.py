"""htpasswd (Basic) authentication and the access rules, over real sockets, as a client sees them.

One registry serves the module, with these users and rules; tests use repository
names of their own. Every refusal is checked to leave the data directory as it
was: no blob, link or upload directory may appear for a request that was denied.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from .cli import run_registry
from .auth_helpers import basic_header, catalog, client_for, fresh_address, snapshot, \
    start_upload_attempts, write_htpasswd
from .client import OCI_MANIFEST, RegistryClient, assert_error, descriptor, digest_of, unique_repo
from .servers import RegistryServer
from .store_view import blob_path, layer_link_path, uploads_path

REALM = "test-realm"
PASSWORDS = {user: f"{user}-{uuid.uuid4().hex}" for user in ("alice", "carol", "frank", "dave")}
PASSWORDS["lena"] = "l" * 40 + uuid.uuid4().hex  # 72 bytes: bcrypt's most
ACCESS = {
    "groups": {"devs": ["carol", "frank"]},
    "rules": [
        {"repositories": ["*"], "users": ["alice"], "actions": ["*"]},
        {"repositories": ["team/*"], "groups": ["devs"], "actions": ["pull", "push"]},
        {"repositories": ["public/*"], "anonymous": True, "actions": ["pull"]},
        {"repositories": ["shared/*"], "users": ["dave"], "actions": ["pull"]},
        {"repositories": ["scratch/*"], "users": ["*"], "actions": ["pull", "push"]},
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One registry for the module (a start costs half a second); failing clients use addresses of their own."""
    base = tmp_path_factory.mktemp("auth-basic")
    write_htpasswd(base / "htpasswd", PASSWORDS)
    config = {"auth": {"htpasswd": {"realm": REALM, "path": str(base / "htpasswd")}, "access": ACCESS}}
    with RegistryServer(base / "data", base / "server.log", config) as started:
        yield started


@pytest.fixture
def user(server: RegistryServer) -> Callable[[str], RegistryClient]:
    """A client logged in as one of PASSWORDS' users."""
    return lambda name: client_for(server.url, auth=(name, PASSWORDS[name]))


@pytest.fixture
def anonymous(server: RegistryServer) -> RegistryClient:
    return client_for(server.url)


def assert_challenged(response: requests.Response, realm: str = REALM) -> None:
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["WWW-Authenticate"] == f'Basic realm="{realm}"'


def assert_denied(response: requests.Response) -> None:
    assert_error(response, 403, "DENIED")
    assert "WWW-Authenticate" not in response.headers


def test_anonymous_version_check_is_challenged(anonymous: RegistryClient) -> None:
    for method in ("GET", "HEAD"):
        assert_challenged(anonymous.request(method, "/v2/"))


def test_right_password_is_let_in(user: Callable[[str], RegistryClient]) -> None:
    """Any known user passes the version check, even one with no rights anywhere but shared/*."""
    for name in ("alice", "dave"):
        r = user(name).request("GET", "/v2/")
        assert r.status_code == 200, r.text
        assert r.json() == {}


BAD_HEADERS = {
    "wrong password": basic_header("alice", "not-" + PASSWORDS["alice"]),
    "unknown user": basic_header("mallory", PASSWORDS["alice"]),
    "password of another user": basic_header("carol", PASSWORDS["alice"]),
    "no password": basic_header("alice", ""),
    "not base64": "Basic !!!not-base64!!!",
    "no colon": "Basic " + base64.b64encode(b"alice").decode(),
    "empty credentials": basic_header("", ""),
    "unsupported scheme": "Digest username=alice",
    "bearer in htpasswd mode": "Bearer abc.def.ghi",
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_bad_credentials_are_refused_and_write_nothing(server: RegistryServer, header: str) -> None:
    client = client_for(server.url, header=header, address=fresh_address())
    repo = unique_repo("team")
    before = snapshot(server.root)
    assert_challenged(client.request("GET", "/v2/"))
    for response in start_upload_attempts(client, repo):
        assert_challenged(response)
    assert snapshot(server.root) == before


def test_user_added_while_running_logs_in_until_removed(server: RegistryServer) -> None:
    htpasswd = server.config["auth"]["htpasswd"]["path"]  # type: ignore[index]
    password = f"erin-{uuid.uuid4().hex}"
    erin = client_for(server.url, auth=("erin", password), address=fresh_address())
    assert_challenged(erin.request("GET", "/v2/"))

    added = run_registry("user", "add", "erin", "--htpasswd", htpasswd, "--password-stdin", stdin=password + "\n")
    assert added.returncode == 0, added.stderr
    assert password not in added.stdout + added.stderr
    assert erin.request("GET", "/v2/").status_code == 200
    repo = unique_repo("scratch")
    digest = erin.push_blob(repo, b"erin's blob")

    listed = run_registry("user", "list", "--htpasswd", htpasswd)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == sorted([*PASSWORDS, "erin"])

    removed = run_registry("user", "remove", "erin", "--htpasswd", htpasswd)
    assert removed.returncode == 0, removed.stderr
    assert_challenged(erin.request("GET", "/v2/"))
    assert_challenged(erin.request("GET", f"/v2/{repo}/blobs/{digest}"))


def test_pull_only_user_cannot_push(server: RegistryServer, user: Callable[[str], RegistryClient]) -> None:
    repo = unique_repo("shared")
    _, body = user("alice").push_image(repo, "v1")
    dave = user("dave")
    r = dave.request("GET", f"/v2/{repo}/manifests/v1")
    assert r.status_code == 200 and r.content == body  # what dave may do, he can

    before = snapshot(server.root)
    for response in start_upload_attempts(dave, repo):
        assert_denied(response)
    assert_denied(dave.request("PUT", f"/v2/{repo}/manifests/v2", data=body, headers={"Content-Type": OCI_MANIFEST}))
    assert snapshot(server.root) == before
    data = b"must not be stored " + repo.encode()
    assert not (server.root / blob_path(digest_of(data))).exists()
    assert not (server.root / layer_link_path(repo, digest_of(data))).exists()
    assert not list((server.root / uploads_path(repo)).glob("*"))  # alice's uploads done, none of dave's
    assert dave.request("GET", f"/v2/{repo}/manifests/v2").status_code == 404


def test_anonymous_cannot_push_where_it_may_pull(server: RegistryServer, anonymous: RegistryClient) -> None:
    repo = unique_repo("public")
    before = snapshot(server.root)
    for response in start_upload_attempts(anonymous, repo):
        assert_challenged(response)
    assert snapshot(server.root) == before


def test_delete_needs_the_delete_right(server: RegistryServer, user: Callable[[str], RegistryClient]) -> None:
    repo = unique_repo("team")
    carol = user("carol")
    digest, body = carol.push_image(repo, "v1")
    layer = json.loads(body)["layers"][0]["digest"]

    before = snapshot(server.root)
    assert_denied(carol.request("DELETE", f"/v2/{repo}/manifests/{digest}"))
    assert_denied(carol.request("DELETE", f"/v2/{repo}/blobs/{layer}"))
    assert_denied(user("dave").request("DELETE", f"/v2/{repo}/manifests/{digest}"))
    assert_challenged(client_for(server.url).request("DELETE", f"/v2/{repo}/manifests/{digest}"))
    assert snapshot(server.root) == before
    assert carol.request("GET", f"/v2/{repo}/manifests/v1").content == body

    alice = user("alice")
    assert alice.request("DELETE", f"/v2/{repo}/manifests/{digest}").status_code == 202
    assert alice.request("DELETE", f"/v2/{repo}/blobs/{layer}").status_code == 202
    assert carol.request("GET", f"/v2/{repo}/manifests/v1").status_code == 404
    assert carol.request("GET", f"/v2/{repo}/blobs/{layer}").status_code == 404


def test_anonymous_pull_only_where_granted(user: Callable[[str], RegistryClient],
                                          anonymous: RegistryClient) -> None:
    public, private = unique_repo("public"), unique_repo("team")
    alice = user("alice")
    _, public_body = alice.push_image(public, "v1")
    _, private_body = alice.push_image(private, "v1")

    r = anonymous.request("GET", f"/v2/{public}/manifests/v1")
    assert r.status_code == 200 and r.content == public_body
    layer = json.loads(public_body)["layers"][0]["digest"]
    r = anonymous.request("GET", f"/v2/{public}/blobs/{layer}")
    assert r.status_code == 200 and digest_of(r.content) == layer
    assert anonymous.request("GET", f"/v2/{public}/tags/list").json()["tags"] == ["v1"]

    private_layer = json.loads(private_body)["layers"][0]["digest"]
    for method in ("GET", "HEAD"):
        assert_challenged(anonymous.request(method, f"/v2/{private}/manifests/v1"))
        assert_challenged(anonymous.request(method, f"/v2/{private}/blobs/{private_layer}"))
    assert_challenged(anonymous.request("GET", f"/v2/{private}/tags/list"))
    # the same blob through the public repository would be a way round: not linked there, not served
    assert anonymous.request("GET", f"/v2/{public}/blobs/{private_layer}").status_code == 404


def test_group_members_share_the_group_rights(user: Callable[[str], RegistryClient]) -> None:
    repo = unique_repo("team")
    carol, frank = user("carol"), user("frank")
    _, body = carol.push_image(repo, "by-carol")
    r = frank.request("GET", f"/v2/{repo}/manifests/by-carol")
    assert r.status_code == 200 and r.content == body
    frank.push_image(repo, "by-frank")
    assert carol.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["by-carol", "by-frank"]

    assert_denied(user("dave").request("GET", f"/v2/{repo}/manifests/by-carol"))
    outside = unique_repo("private")
    assert_denied(carol.request("POST", f"/v2/{outside}/blobs/uploads/"))
    assert_denied(frank.request("GET", f"/v2/{outside}/tags/list"))


def test_catalog_lists_only_pullable_repositories(user: Callable[[str], RegistryClient],
                                                   anonymous: RegistryClient) -> None:
    repos = {prefix: unique_repo(prefix) for prefix in ("team", "public", "private", "shared")}
    alice = user("alice")
    for repo in repos.values():
        alice.push_image(repo, "v1")

    seen = {name: set(catalog(user(name))) & set(repos.values()) for name in PASSWORDS}
    assert seen["alice"] == set(repos.values())
    assert seen["carol"] == seen["frank"] == {repos["team"], repos["public"]}
    assert seen["dave"] == {repos["public"], repos["shared"]}
    assert_challenged(anonymous.request("GET", "/v2/_catalog"))


def test_mount_from_unreadable_repository_uploads_instead(server: RegistryServer,
                                                          user: Callable[[str], RegistryClient]) -> None:
    secret = b"private bytes " + uuid.uuid4().bytes
    source, target = unique_repo("private"), unique_repo("team")
    digest = user("alice").push_blob(source, secret)
    carol = user("carol")

    r = carol.request("POST", f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code == 202, r.text
    assert r.headers["Location"].startswith(f"/v2/{target}/blobs/uploads/")
    assert not (server.root / layer_link_path(target, digest)).exists()
    assert carol.request("HEAD", f"/v2/{target}/blobs/{digest}").status_code == 404
    # the upload offered instead is a real one: finishing it with the bytes is how carol gets the blob
    r = carol.request("PUT", r.headers["Location"], params={"digest": digest}, data=secret)
    assert r.status_code == 201, r.text

    # from a repository carol may read, the same mount links at once
    readable, other = unique_repo("team"), unique_repo("team")
    shared_digest = carol.push_blob(readable, b"team bytes " + uuid.uuid4().bytes)
    r = carol.request("POST", f"/v2/{other}/blobs/uploads/", params={"mount": shared_digest, "from": readable})
    assert r.status_code == 201, r.text
    assert (server.root / layer_link_path(other, shared_digest)).exists()


def test_mount_without_from_is_an_upload_under_auth(server: RegistryServer,
                                                    user: Callable[[str], RegistryClient]) -> None:
    """A mount from anywhere would link any stored blob by its digest alone: not even alice gets one."""
    digest = user("alice").push_blob(unique_repo("private"), b"stored " + uuid.uuid4().bytes)
    for name in ("alice", "carol"):
        target = unique_repo("team")
        r = user(name).request("POST", f"/v2/{target}/blobs/uploads/", params={"mount": digest})
        assert r.status_code == 202, r.text
        assert r.headers["Location"].startswith(f"/v2/{target}/blobs/uploads/")
        assert not (server.root / layer_link_path(target, digest)).exists()
        assert user(name).request("HEAD", f"/v2/{target}/blobs/{digest}").status_code == 404


def test_repository_never_serves_a_blob_it_does_not_link(server: RegistryServer,
                                                         user: Callable[[str], RegistryClient]) -> None:
    alice = user("alice")
    digest = alice.push_blob(unique_repo("private"), b"linked elsewhere " + uuid.uuid4().bytes)
    assert (server.root / blob_path(digest)).exists()
    other = unique_repo("team")
    for name in ("alice", "carol"):
        assert_error(user(name).request("GET", f"/v2/{other}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
        assert_error(user(name).request("HEAD", f"/v2/{other}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_referrers_require_pull(user: Callable[[str], RegistryClient], anonymous: RegistryClient) -> None:
    repo = unique_repo("private")
    alice = user("alice")
    subject_digest, subject_body = alice.push_image(repo, "v1")
    config, layer = b"{}", b"signature " + uuid.uuid4().bytes
    alice.push_blob(repo, config)
    alice.push_blob(repo, layer)
    referrer = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": descriptor("application/vnd.oci.empty.v1+json", config),
        "layers": [descriptor("application/octet-stream", layer)],
        "subject": descriptor(OCI_MANIFEST, subject_body),
    }).encode()
    assert alice.push_manifest(repo, digest_of(referrer), referrer).status_code == 201

    path = f"/v2/{repo}/referrers/{subject_digest}"
    r = alice.request("GET", path)
    assert r.status_code == 200, r.text
    assert [m["digest"] for m in r.json()["manifests"]] == [digest_of(referrer)]
    assert_denied(user("dave").request("GET", path))
    assert_denied(user("carol").request("GET", path))
    assert_challenged(anonymous.request("GET", path))


def test_passwords_beyond_bcrypt_s_72_bytes_are_read_as_apache_reads_them(server: RegistryServer) -> None:
    """Only the first 72 bytes count, as with Apache's htpasswd; a long wrong password is a failed
    login like any other (401, and counted towards the limit), never a 500."""
    address = fresh_address()
    assert client_for(server.url, auth=("lena", PASSWORDS["lena"] + "-ignored"),
                      address=address).request("GET", "/v2/").status_code == 200
    for length in (73, 1000, 5000):  # longer: aiohttp refuses headers over 8 KiB itself
        wrong = client_for(server.url, auth=("lena", "x" * length), address=address)
        assert_challenged(wrong.request("GET", "/v2/"))
    for _ in range(7):
        assert_challenged(client_for(server.url, auth=("alice", "y" * 200), address=address).request("GET", "/v2/"))
    limited = client_for(server.url, auth=("lena", PASSWORDS["lena"]), address=address).request("GET", "/v2/")
    assert_error(limited, 429, "TOOMANYREQUESTS")
    assert "Traceback" not in server.log_path.read_text()


def test_failed_logins_are_limited_per_client(server: RegistryServer) -> None:
    address = fresh_address()
    wrong = client_for(server.url, auth=("alice", "wrong"), address=address)
    for _ in range(10):
        assert_challenged(wrong.request("GET", "/v2/"))

    right = client_for(server.url, auth=("alice", PASSWORDS["alice"]), address=address)
    repo = unique_repo("team")
    before = snapshot(server.root)
    for response in (right.request("GET", "/v2/"), right.request("POST", f"/v2/{repo}/blobs/uploads/"),
                     wrong.request("GET", "/v2/")):
        assert_error(response, 429, "TOOMANYREQUESTS")
        assert 0 < int(response.headers["Retry-After"]) <= 60
    assert snapshot(server.root) == before

    # another client is not held back by this one's failures
    elsewhere = client_for(server.url, auth=("alice", PASSWORDS["alice"]), address=fresh_address())
    assert elsewhere.request("GET", "/v2/").status_code == 200
    assert server.log_path.read_text().count(f"authentication failed from {address}:") == 10


def test_log_names_the_client_and_never_a_password(server: RegistryServer,
                                                   user: Callable[[str], RegistryClient]) -> None:
    address = fresh_address()
    wrong_password = f"wrong-{uuid.uuid4().hex}"
    wrong_user = f"nobody-{uuid.uuid4().hex[:8]}"
    client_for(server.url, auth=("carol", wrong_password), address=address).request("GET", "/v2/")
    client_for(server.url, auth=(wrong_user, wrong_password), address=address).request("GET", "/v2/")
    for name in PASSWORDS:
        user(name).request("GET", "/v2/")
    log = wait_for_log(server.log_path, f"authentication failed from {address}:", count=2)
    lines = [line for line in log.splitlines() if f"authentication failed from {address}:" in line]
    assert "carol" in lines[0] and wrong_user in lines[1]
    for secret in [wrong_password, *PASSWORDS.values()]:
        assert secret not in log
        assert base64.b64encode(f"carol:{secret}".encode()).decode() not in log


def wait_for_log(path: Path, text: str, count: int = 1, timeout: float = 5) -> str:
    """The server log once it holds count lines with text (written by another process)."""
    deadline = time.monotonic() + timeout
    while True:
        log = path.read_text()
        if log.count(text) >= count or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def test_without_access_rules_users_may_do_everything(tmp_path: Path,
                                                      make_registry: Callable[..., RegistryServer]) -> None:
    write_htpasswd(tmp_path / "users", {"ann": "ann-pw", "ben": "ben-pw"})
    server = make_registry(config={"auth": {"htpasswd": {"path": str(tmp_path / "users")}}})
    repo = unique_repo("anything")
    ann, ben = client_for(server.url, auth=("ann", "ann-pw")), client_for(server.url, auth=("ben", "ben-pw"))
    digest, body = ann.push_image(repo, "v1")
    assert ben.request("GET", f"/v2/{repo}/manifests/v1").content == body
    assert repo in catalog(ben)
    assert ben.request("DELETE", f"/v2/{repo}/manifests/{digest}").status_code == 202

    anonymous = client_for(server.url)
    before = snapshot(server.root)
    assert_challenged(anonymous.request("GET", f"/v2/{repo}/tags/list"), realm="registry")
    for response in start_upload_attempts(anonymous, repo):
        assert_challenged(response, realm="registry")
    assert snapshot(server.root) == before


def test_htpasswd_broken_while_serving_keeps_its_users(tmp_path: Path,
                                                       make_registry: Callable[..., RegistryServer]) -> None:
    """A file that turns invalid mid-flight keeps the users it had (and says so in the log);
    the registry refuses to start on one (see test_auth_e2e)."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, {"alice": PASSWORDS["alice"]})
    server = make_registry(config={"auth": {"htpasswd": {"realm": REALM, "path": str(htpasswd)}}})
    alice = client_for(server.url, auth=("alice", PASSWORDS["alice"]))
    assert alice.request("GET", "/v2/").status_code == 200
    htpasswd.write_text("alice:plaintext-is-not-bcrypt\n")
    assert alice.request("GET", "/v2/").status_code == 200
    server.logged("keeping the previous users")
