"""Docker registry tokens (JWT), over real sockets: the built-in token service, and an external one.

Built-in: clients log in at /auth/token (Basic, or the OAuth2 password and
refresh-token grants) and get tokens granting no more than the access rules.
External: the registry only verifies tokens, trusted through a root CA bundle
(x5c chain, RS256) or a JWKS file (kid, ES256); the tests play the token
service, signing with keys made here. Every refusal leaves the data directory as it was.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .auth_helpers import client_for, fresh_address, snapshot, start_upload_attempts, write_htpasswd
from .client import assert_error, unique_repo
from .servers import RegistryServer
from .store_view import layer_link_path

SERVICE, ISSUER = "test-registry", "test-issuer"
PASSWORDS = {user: f"{user}-{uuid.uuid4().hex}" for user in ("alice", "dave")}
ACCESS = {
    "rules": [
        {"repositories": ["*"], "users": ["alice"], "actions": ["*"]},
        {"repositories": ["shared/*"], "users": ["dave"], "actions": ["pull"]},
        {"repositories": ["public/*"], "anonymous": True, "actions": ["pull"]},
    ],
}


def builtin_config(base: Path) -> dict[str, Any]:
    write_htpasswd(base / "htpasswd", PASSWORDS)
    return {"auth": {"htpasswd": {"path": str(base / "htpasswd")},
                     "token": {"service": SERVICE, "issuer": ISSUER, "builtin": True},
                     "access": ACCESS}}


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    base = tmp_path_factory.mktemp("auth-builtin")
    with RegistryServer(base / "data", base / "server.log", builtin_config(base)) as started:
        yield started


def realm(server: RegistryServer) -> str:
    return f"{server.url}/auth/token"


def login(server: RegistryServer, scopes: list[str], auth: tuple[str, str] | None = None,
          address: str | None = None, **params: str) -> requests.Response:
    """GET the token endpoint as `docker login` and pulls do."""
    session = client_for(server.url, address=address).session
    return session.get(realm(server), params={"service": SERVICE, "scope": scopes, **params},
                       auth=auth, timeout=30)


def token_for(server: RegistryServer, user: str | None, *scopes: str) -> str:
    auth = (user, PASSWORDS[user]) if user else None
    r = login(server, list(scopes), auth=auth)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def claims_of(server: RegistryServer, token: str) -> dict[str, Any]:
    """The token's claims, its signature checked with the key the registry keeps in its data directory."""
    key = serialization.load_pem_private_key((server.root / "token-key.pem").read_bytes(), password=None)
    return jwt.decode(token, key.public_key(), algorithms=["ES256"], audience=SERVICE, issuer=ISSUER)  # type: ignore[arg-type]


def repository_access(name: str, *actions: str) -> dict[str, Any]:
    return {"type": "repository", "name": name, "actions": sorted(actions)}


def assert_bearer_challenge(response: requests.Response, realm_url: str, service: str, scope: str | None,
                            insufficient: bool = False) -> None:
    assert_error(response, 401, "UNAUTHORIZED")
    expected = f'Bearer realm="{realm_url}",service="{service}"'
    if scope:
        expected += f',scope="{scope}"'
    if insufficient:
        expected += ',error="insufficient_scope"'
    assert response.headers["WWW-Authenticate"] == expected


# --- the built-in token service ------------------------------------------------------------------


def test_challenge_names_the_builtin_realm_service_and_scope(builtin: RegistryServer) -> None:
    anonymous = client_for(builtin.url)
    repo = unique_repo("shared")
    url = f"http://127.0.0.1:{builtin.port}/auth/token"
    assert_bearer_challenge(anonymous.request("GET", "/v2/"), url, SERVICE, None)
    assert_bearer_challenge(anonymous.request("GET", f"/v2/{repo}/manifests/latest"), url, SERVICE,
                            f"repository:{repo}:pull")
    assert_bearer_challenge(anonymous.request("POST", f"/v2/{repo}/blobs/uploads/"), url, SERVICE,
                            f"repository:{repo}:pull,push")
    assert_bearer_challenge(anonymous.request("DELETE", f"/v2/{repo}/manifests/latest"), url, SERVICE,
                            f"repository:{repo}:delete")


def test_login_gets_access_and_refresh_tokens_that_push_and_pull(builtin: RegistryServer) -> None:
    repo = unique_repo("team")
    before = time.time()
    r = login(builtin, [f"repository:{repo}:pull,push"], auth=("alice", PASSWORDS["alice"]),
              offline_token="true", client_id="test")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] > 0
    issued = datetime.datetime.fromisoformat(body["issued_at"]).timestamp()
    assert before - 5 <= issued <= time.time() + 5
    claims = claims_of(builtin, body["token"])
    assert claims["sub"] == "alice"
    assert claims["access"] == [repository_access(repo, "pull", "push")]
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims_of(builtin, body["refresh_token"])["sub"] == "alice"

    alice = client_for(builtin.url, token=body["token"])
    assert alice.request("GET", "/v2/").status_code == 200
    digest, manifest = alice.push_image(repo, "v1")
    r = alice.request("GET", f"/v2/{repo}/manifests/v1")
    assert r.status_code == 200 and r.content == manifest

    # the token is for this repository only, however much alice herself may do
    other = unique_repo("team")
    before_other = snapshot(builtin.root)
    assert_bearer_challenge(alice.request("POST", f"/v2/{other}/blobs/uploads/"), realm(builtin), SERVICE,
                            f"repository:{other}:pull,push", insufficient=True)
    assert_bearer_challenge(alice.request("DELETE", f"/v2/{repo}/manifests/{digest}"), realm(builtin), SERVICE,
                            f"repository:{repo}:delete", insufficient=True)
    assert snapshot(builtin.root) == before_other

    # a refresh token is no access token
    refresh = client_for(builtin.url, token=body["refresh_token"], address=fresh_address())
    assert_error(refresh.request("GET", f"/v2/{repo}/manifests/v1"), 401, "UNAUTHORIZED")


def test_refresh_token_grant_gives_a_new_access_token(builtin: RegistryServer) -> None:
    repo = unique_repo("team")
    first = login(builtin, [f"repository:{repo}:pull,push"], auth=("alice", PASSWORDS["alice"]),
                  offline_token="true", client_id="test").json()
    client_for(builtin.url, token=first["token"]).push_image(repo, "v1")

    r = requests.post(realm(builtin), timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"], "service": SERVICE,
        "scope": f"repository:{repo}:pull", "client_id": "test"})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert token != first["token"]
    claims = claims_of(builtin, token)
    assert claims["sub"] == "alice" and claims["access"] == [repository_access(repo, "pull")]
    assert client_for(builtin.url, token=token).request("GET", f"/v2/{repo}/manifests/v1").status_code == 200

    address = fresh_address()
    for bad in (first["token"], first["refresh_token"][:-4] + "AAAA", "not-a-jwt"):
        r = client_for(builtin.url, address=address).session.post(realm(builtin), timeout=30, data={
            "grant_type": "refresh_token", "refresh_token": bad, "service": SERVICE, "client_id": "test"})
        assert_error(r, 401, "UNAUTHORIZED")


def test_password_grant(builtin: RegistryServer) -> None:
    repo = unique_repo("shared")
    form = {"grant_type": "password", "username": "dave", "password": PASSWORDS["dave"], "service": SERVICE,
            "scope": f"repository:{repo}:pull", "client_id": "test", "access_type": "offline"}
    r = requests.post(realm(builtin), data=form, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert claims_of(builtin, body["access_token"])["access"] == [repository_access(repo, "pull")]
    assert claims_of(builtin, body["refresh_token"])["sub"] == "dave"

    r = client_for(builtin.url, address=fresh_address()).session.post(
        realm(builtin), data={**form, "password": "not-" + PASSWORDS["dave"]}, timeout=30)
    assert_error(r, 401, "UNAUTHORIZED")


@pytest.mark.parametrize(("content_type", "body"), [
    ("multipart/form-data", b"grant_type=password"),
    ("multipart/form-data; boundary=x", b"no boundary here"),
    ("application/x-www-form-urlencoded; charset=no-such-charset", b"grant_type=password"),
    ("application/x-www-form-urlencoded", b"grant_type=password&username=\xff&password=x"),
])
def test_unreadable_form_is_400(builtin: RegistryServer, content_type: str, body: bytes) -> None:
    """Found by schemathesis: a multipart body without its boundary (and other unreadable forms) was a 500."""
    r = requests.post(realm(builtin), data=body, headers={"Content-Type": content_type}, timeout=30)
    assert_error(r, 400, "INVALID_REQUEST")


def test_scope_beyond_the_rules_is_granted_only_in_part(builtin: RegistryServer) -> None:
    shared, private = unique_repo("shared"), unique_repo("private")
    _, manifest = client_for(builtin.url, token=token_for(builtin, "alice", f"repository:{shared}:push,pull")
                             ).push_image(shared, "v1")

    token = token_for(builtin, "dave", f"repository:{shared}:pull,push", f"repository:{private}:pull")
    assert claims_of(builtin, token)["access"] == [repository_access(shared, "pull"), repository_access(private)]
    dave = client_for(builtin.url, token=token)
    r = dave.request("GET", f"/v2/{shared}/manifests/v1")
    assert r.status_code == 200 and r.content == manifest

    before = snapshot(builtin.root)
    for response in start_upload_attempts(dave, shared):
        assert_bearer_challenge(response, realm(builtin), SERVICE, f"repository:{shared}:pull,push",
                                insufficient=True)
    assert_bearer_challenge(dave.request("GET", f"/v2/{private}/tags/list"), realm(builtin), SERVICE,
                            f"repository:{private}:pull", insufficient=True)
    assert snapshot(builtin.root) == before


def test_anonymous_token_gets_only_anonymous_grants(builtin: RegistryServer) -> None:
    public, shared = unique_repo("public"), unique_repo("shared")
    alice = client_for(builtin.url, token=token_for(builtin, "alice", f"repository:{public}:pull,push",
                                                    f"repository:{shared}:pull,push"))
    _, manifest = alice.push_image(public, "v1")
    alice.push_image(shared, "v1")

    r = login(builtin, [f"repository:{public}:pull,push", f"repository:{shared}:pull"], offline_token="true")
    assert r.status_code == 200, r.text
    assert "refresh_token" not in r.json()  # nothing to refresh without a user
    token = r.json()["token"]
    claims = claims_of(builtin, token)
    assert claims["access"] == [repository_access(public, "pull"), repository_access(shared)]
    assert not claims["sub"]

    anonymous = client_for(builtin.url, token=token)
    r = anonymous.request("GET", f"/v2/{public}/manifests/v1")
    assert r.status_code == 200 and r.content == manifest
    assert_error(anonymous.request("GET", f"/v2/{shared}/manifests/v1"), 401, "UNAUTHORIZED")
    assert_error(anonymous.request("GET", "/v2/_catalog"), 401, "UNAUTHORIZED")
    before = snapshot(builtin.root)
    for response in start_upload_attempts(anonymous, public):
        assert_error(response, 401, "UNAUTHORIZED")
    assert snapshot(builtin.root) == before


def test_wrong_credentials_at_the_token_endpoint(builtin: RegistryServer) -> None:
    address = fresh_address()
    scope = [f"repository:{unique_repo('shared')}:pull"]
    for auth in (("alice", "not-" + PASSWORDS["alice"]), ("dave", PASSWORDS["alice"]), ("alice", "")):
        assert_error(login(builtin, scope, auth=auth, address=address), 401, "UNAUTHORIZED")
    r = client_for(builtin.url, address=address).session.get(
        realm(builtin), params={"scope": scope}, headers={"Authorization": "Basic %%%"}, timeout=30)
    assert_error(r, 401, "UNAUTHORIZED")
    # a token for a service this one is not
    r = login(builtin, scope, auth=("alice", PASSWORDS["alice"]), service="other-registry")
    assert_error(r, 403, "DENIED")
    assert "token" not in r.json()


def test_long_passwords_at_the_token_endpoint(builtin: RegistryServer) -> None:
    """Passwords beyond bcrypt's 72 bytes, by Basic and by the password grant: 401, counted, never a 500."""
    address = fresh_address()
    scope = [f"repository:{unique_repo('shared')}:pull"]
    for length in (73, 5000):
        assert_error(login(builtin, scope, auth=("alice", "x" * length), address=address), 401, "UNAUTHORIZED")
        r = client_for(builtin.url, address=address).session.post(
            realm(builtin), data={"grant_type": "password", "username": "alice", "password": "x" * length,
                                  "service": SERVICE, "scope": scope[0]}, timeout=30)
        assert_error(r, 401, "UNAUTHORIZED")
    for _ in range(6):
        assert_error(login(builtin, scope, auth=("alice", "y" * 100), address=address), 401, "UNAUTHORIZED")
    assert_error(login(builtin, scope, auth=("alice", PASSWORDS["alice"]), address=address), 429, "TOOMANYREQUESTS")
    assert "Traceback" not in builtin.log_path.read_text()


def test_failed_logins_at_the_token_endpoint_are_limited(builtin: RegistryServer) -> None:
    address = fresh_address()
    scope = [f"repository:{unique_repo('shared')}:pull"]
    for _ in range(10):
        assert_error(login(builtin, scope, auth=("alice", "wrong"), address=address), 401, "UNAUTHORIZED")
    r = login(builtin, scope, auth=("alice", PASSWORDS["alice"]), address=address)
    assert_error(r, 429, "TOOMANYREQUESTS")
    assert 0 < int(r.headers["Retry-After"]) <= 60
    # the registry itself refuses this client's tokens too, until the window passes
    token = token_for(builtin, "alice", scope[0])
    assert_error(client_for(builtin.url, token=token, address=address).request("GET", "/v2/"),
                 429, "TOOMANYREQUESTS")
    assert client_for(builtin.url, token=token).request("GET", "/v2/").status_code == 200


def test_log_holds_no_token_and_no_password(builtin: RegistryServer) -> None:
    repo = unique_repo("team")
    body = login(builtin, [f"repository:{repo}:pull,push"], auth=("alice", PASSWORDS["alice"]),
                 offline_token="true").json()
    client_for(builtin.url, token=body["token"]).push_image(repo, "v1")
    refreshed = requests.post(realm(builtin), timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"], "service": SERVICE}).json()
    address = fresh_address()
    forged = body["token"][:-8] + "AAAAAAAA"
    client_for(builtin.url, token=forged, address=address).request("GET", f"/v2/{repo}/manifests/v1")
    requests.post(realm(builtin), timeout=30, data={
        "grant_type": "password", "username": "dave", "password": PASSWORDS["dave"], "service": SERVICE})

    deadline = time.monotonic() + 5
    while f"authentication failed from {address}:" not in builtin.log_path.read_text():
        assert time.monotonic() < deadline, "the failed login was not logged"
        time.sleep(0.05)
    log = builtin.log_path.read_text()
    secrets = [*PASSWORDS.values(), body["token"], body["refresh_token"], refreshed["token"], forged]
    for secret in secrets:
        assert secret not in log
        assert secret.split(".")[-1] not in log  # not even a signature


def test_tokens_outlive_a_restart(tmp_path: Path, make_registry: Callable[..., RegistryServer]) -> None:
    """The signing key is kept in the data directory, so tokens clients hold stay good."""
    server = make_registry(config=builtin_config(tmp_path))
    key = (server.root / "token-key.pem").read_bytes()
    assert (server.root / "token-key.pem").stat().st_mode & 0o777 == 0o600
    repo = unique_repo("team")
    token = token_for(server, "alice", f"repository:{repo}:pull,push")
    client_for(server.url, token=token).push_image(repo, "v1")
    server.restart()
    assert (server.root / "token-key.pem").read_bytes() == key
    assert client_for(server.url, token=token).request("GET", f"/v2/{repo}/manifests/v1").status_code == 200


# --- an external token service -------------------------------------------------------------------

EXT_SERVICE, EXT_ISSUER, EXT_REALM = "ext-registry", "ext-issuer", "https://auth.example.test/token"
NOW = datetime.datetime.now(datetime.timezone.utc)


def make_cert(subject: str, key: Any, issuer: x509.Certificate | None = None, issuer_key: Any = None,
              ca: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key or key, hashes.SHA256())
    )


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def der64(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


class Issuer:
    """The external token service's keys: a root CA with a leaf (RS256, x5c) and an EC key (ES256, JWKS)."""

    def __init__(self, directory: Path) -> None:
        self.root_key, self.leaf_key = rsa_key(), rsa_key()
        self.root = make_cert("token root", self.root_key, ca=True)
        self.leaf = make_cert("token signer", self.leaf_key, self.root, self.root_key)
        # a look-alike elsewhere: its own root, not in the bundle
        self.stranger_root_key, self.stranger_key = rsa_key(), rsa_key()
        self.stranger_root = make_cert("token root", self.stranger_root_key, ca=True)
        self.stranger = make_cert("token signer", self.stranger_key, self.stranger_root, self.stranger_root_key)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.bundle = directory / "root.pem"
        self.bundle.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))
        self.jwks = directory / "jwks.json"
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        self.jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"}]}))

    def claims(self, access: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": EXT_ISSUER, "aud": EXT_SERVICE, "sub": "ext-user", "iat": now, "nbf": now - 5,
                "exp": now + 300, "jti": uuid.uuid4().hex, "access": access, **overrides}

    def rs256(self, access: list[dict[str, Any]], key: Any = None, chain: list[x509.Certificate] | None = None,
              **overrides: Any) -> str:
        return jwt.encode(self.claims(access, **overrides), key or self.leaf_key, algorithm="RS256",
                          headers={"x5c": [der64(c) for c in (chain or [self.leaf])]})

    def es256(self, access: list[dict[str, Any]], key: Any = None, kid: str = "ec-1", **overrides: Any) -> str:
        return jwt.encode(self.claims(access, **overrides), key or self.ec_key, algorithm="ES256",
                          headers={"kid": kid})


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("token-issuer"))


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[RegistryServer]:
    base = tmp_path_factory.mktemp("auth-external")
    config = {"auth": {"token": {"realm": EXT_REALM, "service": EXT_SERVICE, "issuer": EXT_ISSUER,
                                 "rootcertbundle": str(issuer.bundle), "jwks": str(issuer.jwks)}}}
    with RegistryServer(base / "data", base / "server.log", config) as started:
        yield started


def push_pull(name: str) -> list[dict[str, Any]]:
    return [repository_access(name, "pull", "push")]


def test_external_challenge_names_the_configured_realm(external: RegistryServer) -> None:
    repo = unique_repo("ext")
    anonymous = client_for(external.url)
    assert_bearer_challenge(anonymous.request("GET", "/v2/"), EXT_REALM, EXT_SERVICE, None)
    assert_bearer_challenge(anonymous.request("HEAD", f"/v2/{repo}/manifests/v1"), EXT_REALM, EXT_SERVICE,
                            f"repository:{repo}:pull")


@pytest.mark.parametrize("algorithm", ["RS256 x5c leaf", "RS256 x5c leaf+root", "ES256 jwks"])
def test_valid_external_token_pushes_and_pulls(external: RegistryServer, issuer: Issuer, algorithm: str) -> None:
    repo = unique_repo("ext")
    if algorithm == "ES256 jwks":
        token = issuer.es256(push_pull(repo))
    else:
        token = issuer.rs256(push_pull(repo), chain=[issuer.leaf, issuer.root] if "root" in algorithm else None)
    client = client_for(external.url, token=token)
    assert client.request("GET", "/v2/").status_code == 200
    _, manifest = client.push_image(repo, "v1")
    r = client.request("GET", f"/v2/{repo}/manifests/v1")
    assert r.status_code == 200 and r.content == manifest


def test_token_within_the_clock_skew_is_accepted(external: RegistryServer, issuer: Issuer) -> None:
    repo = unique_repo("ext")
    now = int(time.time())
    for token in (issuer.rs256(push_pull(repo), exp=now - 30), issuer.es256(push_pull(repo), nbf=now + 30),
                  issuer.rs256(push_pull(repo), iat=now + 30, nbf=now + 30)):
        client = client_for(external.url, token=token)
        digest = client.push_blob(repo, uuid.uuid4().bytes)
        assert client.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code == 200


def _now() -> int:
    return int(time.time())


def _self_signed(issuer: Issuer, access: list[dict[str, Any]]) -> str:
    key = rsa_key()
    return issuer.rs256(access, key=key, chain=[make_cert("token signer", key)])


def _x5c(issuer: Issuer, access: list[dict[str, Any]], chain: Any) -> str:
    return jwt.encode(issuer.claims(access), issuer.leaf_key, algorithm="RS256", headers={"x5c": chain})


def _es256_header_on_rs256(issuer: Issuer, access: list[dict[str, Any]]) -> str:
    """An RS256 token relabelled ES256: the registry must not try the leaf's RSA key as an EC one."""
    _, claims, signature = issuer.rs256(access).split(".")
    header = {"alg": "ES256", "typ": "JWT", "x5c": [der64(issuer.leaf)]}
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).decode().rstrip("=")
    return f"{encoded}.{claims}.{signature}"


def _signed_es256(issuer: Issuer, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token with a header PyJWT would refuse to write, signed with the trusted EC key."""
    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = f"{encode(json.dumps(header).encode())}.{encode(json.dumps(claims).encode())}"
    algorithm = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
    return f"{signing_input}.{encode(algorithm.sign(signing_input.encode(), issuer.ec_key))}"


#: tokens the registry must not honour, made for (issuer, access)
BAD_TOKENS: dict[str, Callable[[Issuer, list[dict[str, Any]]], str]] = {
    "expired": lambda i, a: i.rs256(a, exp=_now() - 120, iat=_now() - 600, nbf=_now() - 600),
    "expired ES256": lambda i, a: i.es256(a, exp=_now() - 90),
    "not valid yet": lambda i, a: i.rs256(a, nbf=_now() + 120),
    "another service": lambda i, a: i.rs256(a, aud="other-registry"),
    "another issuer": lambda i, a: i.es256(a, iss="other-issuer"),
    "no exp": lambda i, a: jwt.encode({k: v for k, v in i.claims(a).items() if k != "exp"}, i.leaf_key,
                                      algorithm="RS256", headers={"x5c": [der64(i.leaf)]}),
    "signed by another key, same x5c": lambda i, a: i.rs256(a, key=rsa_key()),
    "chain to another root": lambda i, a: i.rs256(a, key=i.stranger_key, chain=[i.stranger]),
    "chain with its own root": lambda i, a: i.rs256(a, key=i.stranger_key, chain=[i.stranger, i.stranger_root]),
    "self-signed leaf": _self_signed,
    "unknown kid": lambda i, a: i.es256(a, kid="ec-2"),
    "jwks kid, another key": lambda i, a: i.es256(a, key=ec.generate_private_key(ec.SECP256R1())),
    "alg none": lambda i, a: jwt.encode(i.claims(a), None, algorithm="none"),
    "HS256": lambda i, a: jwt.encode(i.claims(a), "a-shared-secret-of-32-bytes-or-more", algorithm="HS256"),
    "not a jwt": lambda i, a: "abc.def.ghi",
    "x5c not base64": lambda i, a: _x5c(i, a, ["not-base64!!"]),
    "x5c not DER": lambda i, a: _x5c(i, a, [base64.b64encode(b"not a certificate").decode()]),
    "x5c not a list": lambda i, a: _x5c(i, a, der64(i.leaf)),
    "x5c of numbers": lambda i, a: _x5c(i, a, [1, 2]),
    "ES256 header, RSA leaf": _es256_header_on_rs256,
    # claims of the wrong types: a 401, as Distribution (which cannot decode them) answers, never a 500
    "access a string": lambda i, a: i.rs256("repository:x:pull"),  # type: ignore[arg-type]
    "access a number": lambda i, a: i.rs256(5),  # type: ignore[arg-type]
    "access of numbers": lambda i, a: i.rs256([1, 2]),  # type: ignore[list-item]
    "actions a string": lambda i, a: i.rs256([{**a[0], "actions": "pull,push"}]),
    "actions of numbers": lambda i, a: i.rs256([{**a[0], "actions": [1]}]),
    "name a list": lambda i, a: i.rs256([{**a[0], "name": [a[0]["name"]]}]),
    "sub a list": lambda i, a: i.rs256(a, sub=["ext-user"]),
    "kid a list": lambda i, a: _signed_es256(i, {"alg": "ES256", "typ": "JWT", "kid": ["ec-1"]}, i.claims(a)),
    "exp a string": lambda i, a: i.rs256(a, exp="tomorrow"),
    "nbf a list": lambda i, a: i.rs256(a, nbf=[1]),
}


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_untrusted_token_is_refused_and_writes_nothing(external: RegistryServer, issuer: Issuer, case: str) -> None:
    repo = unique_repo("ext")
    owner = client_for(external.url, token=issuer.rs256(push_pull(repo)))
    owner.push_image(repo, "v1")
    client = client_for(external.url, token=BAD_TOKENS[case](issuer, push_pull(repo)), address=fresh_address())
    assert_bearer_challenge(client.request("GET", "/v2/"), EXT_REALM, EXT_SERVICE, None)
    assert_bearer_challenge(client.request("GET", f"/v2/{repo}/manifests/v1"), EXT_REALM, EXT_SERVICE, None)
    before = snapshot(external.root)
    for response in start_upload_attempts(client, repo):
        assert_bearer_challenge(response, EXT_REALM, EXT_SERVICE, None)
    assert snapshot(external.root) == before


def test_token_for_another_repository_is_insufficient(external: RegistryServer, issuer: Issuer) -> None:
    repo, other = unique_repo("ext"), unique_repo("ext")
    client_for(external.url, token=issuer.rs256(push_pull(repo))).push_image(repo, "v1")
    client = client_for(external.url, token=issuer.rs256(push_pull(other)))
    assert_bearer_challenge(client.request("GET", f"/v2/{repo}/manifests/v1"), EXT_REALM, EXT_SERVICE,
                            f"repository:{repo}:pull", insufficient=True)
    before = snapshot(external.root)
    for response in start_upload_attempts(client, repo):
        assert_bearer_challenge(response, EXT_REALM, EXT_SERVICE, f"repository:{repo}:pull,push", insufficient=True)
    assert snapshot(external.root) == before

    # pull alone does not push
    reader = client_for(external.url, token=issuer.es256([repository_access(repo, "pull")]))
    assert reader.request("GET", f"/v2/{repo}/manifests/v1").status_code == 200
    for response in start_upload_attempts(reader, repo):
        assert_bearer_challenge(response, EXT_REALM, EXT_SERVICE, f"repository:{repo}:pull,push", insufficient=True)
    assert snapshot(external.root) == before


def test_mount_needs_pull_on_the_source_in_the_token(external: RegistryServer, issuer: Issuer) -> None:
    """The token names what its holder may touch; a repository outside it is no source to mount from."""
    source, target = unique_repo("ext"), unique_repo("ext")
    digest = client_for(external.url, token=issuer.rs256(push_pull(source))).push_blob(source, uuid.uuid4().bytes)

    pusher = client_for(external.url, token=issuer.rs256(push_pull(target)))
    r = pusher.request("POST", f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code == 202, r.text
    assert not (external.root / layer_link_path(target, digest)).exists()
    assert pusher.request("HEAD", f"/v2/{target}/blobs/{digest}").status_code == 404

    both = client_for(external.url, token=issuer.rs256([*push_pull(target), repository_access(source, "pull")]))
    r = both.request("POST", f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code == 201, r.text
    assert both.request("HEAD", f"/v2/{target}/blobs/{digest}").status_code == 200


def test_external_log_holds_no_token(external: RegistryServer, issuer: Issuer) -> None:
    repo = unique_repo("ext")
    good = issuer.rs256(push_pull(repo))
    client_for(external.url, token=good).push_blob(repo, b"pushed with a token")
    address = fresh_address()
    bad = issuer.rs256(push_pull(repo), key=rsa_key())
    client_for(external.url, token=bad, address=address).request("GET", "/v2/")
    deadline = time.monotonic() + 5
    while f"authentication failed from {address}:" not in external.log_path.read_text():
        assert time.monotonic() < deadline, "the failed login was not logged"
        time.sleep(0.05)
    log = external.log_path.read_text()
    for token in (good, bad):
        assert token not in log and token.split(".")[2] not in log


def test_secrets_in_a_url_are_not_taken(builtin: RegistryServer) -> None:
    """Passwords and refresh tokens only count in a POST body: a URL ends up in access logs."""
    repo = unique_repo("shared")
    r = login(builtin, [f"repository:{repo}:pull"], grant_type="password", username="dave",
              password=PASSWORDS["dave"])
    assert r.status_code == 200, r.text
    assert claims_of(builtin, r.json()["token"])["sub"] == ""  # anonymous: the password was ignored
    assert "refresh_token" not in r.json()
