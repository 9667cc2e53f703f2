"""Real clients against a registry with TLS and authentication: what an operator sets up, end to end.

skopeo logs in (by flags and with `skopeo login`), pushes and pulls over https,
trusting the registry's self-signed certificate through a `--cert-dir` holding
it as ca.crt, against htpasswd and against the built-in token service. Each
skopeo runs with HOME and XDG_RUNTIME_DIR in the test's directory and a
temporary --authfile, so no real credentials are read or written.
Mutual TLS and `registry gen-cert` are checked with requests and cryptography.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import bcrypt
import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from registry.tls import write_self_signed

from .client import OCI_MANIFEST, RegistryClient, unique_repo
from .oci_layout import ACCEPT_ALL, Layout, assert_same_image, small_image
from .servers import ReferenceRegistry, RegistryServer
from .store_view import V2, blob_path

MODES = ["htpasswd", "token"]
USERS = {"alice": "alice-secret", "bob": "bob-secret"}
REPO_ROOT = Path(__file__).resolve().parent.parent


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """bcrypt entries at the lowest cost: the registry accepts any cost, and tests stay fast."""
    path.write_text("".join(f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}\n"
                            for user, pw in users.items()))
    return path


@dataclass
class Setup:
    """A TLS registry with auth, and what a client needs to talk to it."""

    server: RegistryServer
    cert_dir: Path
    home: Path

    @property
    def ca(self) -> str:
        return str(self.cert_dir / "ca.crt")

    def ref(self, repo: str, tag: str) -> str:
        return f"docker://{self.server.host}/{repo}:{tag}"

    def skopeo(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """skopeo with no way to reach the user's own credential files."""
        env = {**os.environ, "HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.home / "run"),
               "REGISTRY_AUTH_FILE": str(self.home / "default-auth.json")}
        return subprocess.run(["skopeo", "--insecure-policy", *args], input=stdin, capture_output=True,
                              text=True, timeout=120, env=env)

    def push(self, source: Layout, tag: str, repo: str, *options: str) -> subprocess.CompletedProcess[str]:
        return self.skopeo("copy", "--dest-cert-dir", str(self.cert_dir), *options, source.ref(tag),
                           self.ref(repo, tag))

    def pull(self, repo: str, tag: str, dest: Path, *options: str) -> subprocess.CompletedProcess[str]:
        return self.skopeo("copy", "--src-cert-dir", str(self.cert_dir), *options, self.ref(repo, tag),
                           f"oci:{dest}:{tag}")

    def session(self, user: str | None = None) -> requests.Session:
        """requests trusting the registry's certificate, logged in as user (a token in token mode)."""
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, wins over session.verify
        session.verify = self.ca
        if user is not None:
            session.auth = (user, USERS[user])
        return session

    def read(self, user: str, path: str, scope: str, headers: dict[str, str] | None = None) -> requests.Response:
        """GET path as user, with the auth the mode asks for (in token mode, a token for scope)."""
        session = self.session(user)
        headers = dict(headers or {})
        if self.mode == "token":
            r = session.get(f"{self.server.url}/auth/token", params={"service": "registry", "scope": scope})
            assert r.status_code == 200, r.text
            session.auth = None
            headers["Authorization"] = f"Bearer {r.json()['token']}"
        r = session.get(f"{self.server.url}{path}", headers=headers)
        assert r.status_code == 200, r.text
        return r

    def get_json(self, user: str, path: str, scope: str) -> Any:
        return self.read(user, path, scope).json()

    def manifest_digest(self, user: str, repo: str, tag: str) -> str:
        """The digest the registry serves for repo:tag."""
        r = self.read(user, f"/v2/{repo}/manifests/{tag}", f"repository:{repo}:pull", {"Accept": ACCEPT_ALL})
        return r.headers["Docker-Content-Digest"]

    def tags(self, user: str, repo: str) -> list[str]:
        return self.get_json(user, f"/v2/{repo}/tags/list", f"repository:{repo}:pull")["tags"]

    @property
    def mode(self) -> str:
        return "token" if (self.server.config or {})["auth"].get("token") else "htpasswd"

    def access_log(self) -> str:
        return self.server.log_path.read_text()


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture
def tls_setup(tmp_path: Path, make_registry: Callable[..., RegistryServer]) -> Callable[..., Setup]:
    """Start a registry with a fresh self-signed certificate, htpasswd users and the given auth mode."""

    def start(mode: str, access: dict[str, Any] | None = None) -> Setup:
        cert_dir = tmp_path / "certs.d"
        write_self_signed(["127.0.0.1"], cert_dir / "ca.crt", tmp_path / "tls" / "registry.key")
        auth: dict[str, Any] = {"htpasswd": {"realm": "test-registry",
                                             "path": str(write_htpasswd(tmp_path / "htpasswd", USERS))}}
        if mode == "token":
            auth["token"] = {"builtin": True, "service": "registry", "issuer": "test-issuer"}
        if access is not None:
            auth["access"] = access
        tls = {"certificate": str(cert_dir / "ca.crt"), "key": str(tmp_path / "tls" / "registry.key")}
        config = {"http": {"tls": tls}, "auth": auth}
        home = tmp_path / "home"
        (home / "run").mkdir(parents=True, exist_ok=True)
        return Setup(make_registry(config=config), cert_dir, home)

    return start


@pytest.mark.parametrize("mode", MODES)
def test_push_and_pull_with_credentials_over_tls(tls_setup: Callable[..., Setup], tmp_path: Path, mode: str) -> None:
    setup = tls_setup(mode)
    assert setup.server.url.startswith("https://")
    challenge = setup.session().get(f"{setup.server.url}/v2/")
    assert challenge.status_code == 401
    if mode == "token":  # the realm is this server's own token service, reached as the client reached it
        expected = f'Bearer realm="https://{setup.server.host}/auth/token",service="registry"'
    else:
        expected = 'Basic realm="test-registry"'
    assert challenge.headers["WWW-Authenticate"] == expected

    source = small_image(tmp_path / "src", "v1")
    repo = unique_repo("e2e")
    creds = f"alice:{USERS['alice']}"
    ok(setup.push(source, "v1", repo, "--dest-creds", creds))
    token_requests = [line for line in setup.access_log().splitlines() if '"GET /auth/token?' in line]
    if mode == "token":  # skopeo went through the token service, not Basic on every request
        assert any("skopeo/" in line for line in token_requests), token_requests
    else:
        assert token_requests == []
    digest, _ = source.manifest("v1")
    assert setup.manifest_digest("alice", repo, "v1") == digest

    ok(setup.pull(repo, "v1", tmp_path / "out", "--src-creds", creds))
    assert_same_image(source, "v1", Layout(tmp_path / "out"), "v1")

    wrong = setup.pull(repo, "v1", tmp_path / "wrong", "--src-creds", "alice:not-her-password")
    assert wrong.returncode != 0
    assert not (tmp_path / "wrong" / "index.json").exists()


@pytest.mark.parametrize("mode", MODES)
def test_skopeo_login_then_push_and_pull(tls_setup: Callable[..., Setup], tmp_path: Path, mode: str) -> None:
    setup = tls_setup(mode)
    authfile = tmp_path / "auth.json"
    login = ["--authfile", str(authfile), "--cert-dir", str(setup.cert_dir)]

    refused = setup.skopeo("login", *login, "--username", "alice", "--password-stdin", setup.server.host,
                           stdin="wrong\n")
    assert refused.returncode != 0
    assert not authfile.exists() or setup.server.host not in authfile.read_text()

    ok(setup.skopeo("login", *login, "--username", "alice", "--password-stdin", setup.server.host,
                    stdin=USERS["alice"] + "\n"))
    assert setup.server.host in authfile.read_text()
    assert not (tmp_path / "home" / ".docker").exists()

    source = small_image(tmp_path / "src", "v2")
    repo = unique_repo("e2e")
    ok(setup.push(source, "v2", repo, "--dest-authfile", str(authfile)))
    digest, _ = source.manifest("v2")
    assert setup.manifest_digest("alice", repo, "v2") == digest
    ok(setup.pull(repo, "v2", tmp_path / "out", "--src-authfile", str(authfile)))
    assert_same_image(source, "v2", Layout(tmp_path / "out"), "v2")

    ok(setup.skopeo("logout", "--authfile", str(authfile), setup.server.host))
    anonymous = setup.pull(repo, "v2", tmp_path / "after-logout", "--src-authfile", str(authfile))
    assert anonymous.returncode != 0


PULL_ONLY_BOB = {
    "rules": [
        {"repositories": ["*"], "users": ["alice"], "actions": ["*"]},
        {"repositories": ["*"], "users": ["bob"], "actions": ["pull"]},
        {"repositories": ["public/*"], "anonymous": True, "actions": ["pull"]},
    ],
}


@pytest.mark.parametrize("mode", MODES)
def test_pull_only_user_cannot_push(tls_setup: Callable[..., Setup], tmp_path: Path, mode: str) -> None:
    setup = tls_setup(mode, PULL_ONLY_BOB)
    source = small_image(tmp_path / "src", "v1")
    repo = unique_repo("e2e")

    refused = setup.push(source, "v1", repo, "--dest-creds", f"bob:{USERS['bob']}")
    assert refused.returncode != 0
    assert "initiating layer upload" in refused.stderr and "denied" in refused.stderr, refused.stderr
    # nothing of the image reached the store: no repository, no blob
    assert setup.server.store.keys(f"{V2}/repositories/{repo}") == []
    for blob in source.reachable(source.manifest("v1")[0]):
        assert not setup.server.store.exists(blob_path(blob))

    # the same image pushed by alice, bob may pull
    ok(setup.push(source, "v1", repo, "--dest-creds", f"alice:{USERS['alice']}"))
    ok(setup.pull(repo, "v1", tmp_path / "out", "--src-creds", f"bob:{USERS['bob']}"))
    assert_same_image(source, "v1", Layout(tmp_path / "out"), "v1")


@pytest.mark.parametrize("mode", MODES)
def test_anonymous_pull_of_public_repositories(tls_setup: Callable[..., Setup], tmp_path: Path, mode: str) -> None:
    setup = tls_setup(mode, PULL_ONLY_BOB)
    source = small_image(tmp_path / "src", "v1")
    public, private = unique_repo("public"), unique_repo("private")
    for repo in (public, private):
        ok(setup.push(source, "v1", repo, "--dest-creds", f"alice:{USERS['alice']}"))

    ok(setup.pull(public, "v1", tmp_path / "public", "--src-no-creds"))
    assert_same_image(source, "v1", Layout(tmp_path / "public"), "v1")

    refused = setup.pull(private, "v1", tmp_path / "private", "--src-no-creds")
    assert refused.returncode != 0
    assert not (tmp_path / "private" / "index.json").exists()
    # nor may an anonymous client push to the public repositories
    pushed = setup.push(small_image(tmp_path / "other", "v9"), "v9", public, "--dest-no-creds")
    assert pushed.returncode != 0
    assert setup.tags("alice", public) == ["v1"]


def test_blob_bytes_over_tls_are_intact(tmp_path: Path, make_registry: Callable[..., RegistryServer]) -> None:
    """Blobs on the filesystem are served with sendfile on plain http; over TLS they must go through TLS."""
    cert, key = tmp_path / "registry.crt", tmp_path / "registry.key"
    write_self_signed(["127.0.0.1"], cert, key)
    server = make_registry(config={"http": {"tls": {"certificate": str(cert), "key": str(key)}}})
    client = RegistryClient(server.url)
    client.session.trust_env = False
    client.session.verify = str(cert)
    data = os.urandom(3 * 1024 * 1024 + 17)
    repo = unique_repo("tls")
    digest = client.push_blob(repo, data)

    whole = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert whole.status_code == 200
    assert whole.content == data
    part = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=1000-2000999"})
    assert part.status_code == 206
    assert part.content == data[1000:2001000]



def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(directory: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path, key, certificate


def make_client_cert(directory: Path, name: str, ca_key: ec.EllipticCurvePrivateKey,
                     ca: x509.Certificate) -> tuple[str, str]:
    """A client certificate for `name` issued by ca: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.cert", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca(
        tmp_path: Path, make_registry: Callable[..., RegistryServer]) -> None:
    server_cert, server_key = tmp_path / "server.crt", tmp_path / "server.key"
    write_self_signed(["127.0.0.1"], server_cert, server_key)
    client_ca, ca_key, ca = make_ca(tmp_path, "client-ca")
    good = make_client_cert(tmp_path, "builder", ca_key, ca)
    _, other_key, other_ca = make_ca(tmp_path, "other-ca")
    stranger = make_client_cert(tmp_path, "stranger", other_key, other_ca)
    config = {"http": {"tls": {"certificate": str(server_cert), "key": str(server_key),
                               "clientcas": [str(client_ca)]}}}
    server = make_registry(config=config, probe_cert=good)
    url = f"{server.url}/v2/"

    # under TLS 1.3 the client learns of the refusal after its side of the handshake: a reset or an SSLError
    for cert in (None, stranger):
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(url, verify=str(server_cert), cert=cert, timeout=10)
    # under TLS 1.2 it is the handshake itself that fails
    for cert in (None, stranger):
        context = ssl.create_default_context(cafile=str(server_cert))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            context.load_cert_chain(*cert)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with pytest.raises(ssl.SSLError):
                context.wrap_socket(raw, server_hostname="127.0.0.1")
    r = requests.get(url, verify=str(server_cert), cert=good, timeout=10)
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"

    # skopeo presents a client certificate found in its cert dir as <name>.cert and <name>.key
    cert_dir = tmp_path / "certs.d"
    cert_dir.mkdir()
    shutil.copy(server_cert, cert_dir / "ca.crt")
    source = small_image(tmp_path / "src", "v1")
    repo = unique_repo("mtls")
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home)}
    home.mkdir()
    push = ["skopeo", "--insecure-policy", "copy", "--dest-cert-dir", str(cert_dir), source.ref("v1"),
            f"docker://{server.host}/{repo}:v1"]
    refused = subprocess.run(push, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode != 0
    shutil.copy(good[0], cert_dir / "builder.cert")
    shutil.copy(good[1], cert_dir / "builder.key")
    ok(subprocess.run(push, capture_output=True, text=True, timeout=120, env=env))
    r = requests.get(f"{server.url}/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST},
                     verify=str(server_cert), cert=good, timeout=10)
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == source.manifest("v1")[0]


# --- registry gen-cert --------------------------------------------------------------------------


def test_gen_cert_writes_a_certificate_for_the_hosts_and_a_private_key(
        tmp_path: Path, make_registry: Callable[..., RegistryServer]) -> None:
    cert, key = tmp_path / "out" / "registry.crt", tmp_path / "out" / "registry.key"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-m", "registry", "gen-cert", "127.0.0.1", "registry.example",
                             "--cert", str(cert), "--key", str(key)],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["registry.example"]
    now = datetime.datetime.now(datetime.timezone.utc)
    assert certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert private.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo) == \
        certificate.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)

    # a registry serving it is trusted by a client that trusts the file, under the names it was made for only
    server = make_registry(config={"http": {"tls": {"certificate": str(cert), "key": str(key)}}})
    assert requests.get(f"{server.url}/v2/", verify=str(cert), timeout=10).status_code == 200
    context = ssl.create_default_context(cafile=str(cert))
    for name, trusted in (("registry.example", True), ("other.example", False)):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            if trusted:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    assert tls.version() in ("TLSv1.2", "TLSv1.3")
            else:
                with pytest.raises(ssl.SSLCertVerificationError):
                    context.wrap_socket(raw, server_hostname=name)


# --- an external token service, as Distribution trusts it ------------------------------------------


def libtrust_kid(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    """How libtrust-based token services (docker_auth and the like) name their key in a token's `kid`."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


def test_tokens_distribution_trusts_through_rootcertbundle_are_trusted(
        tmp_path: Path, make_registry: Callable[..., RegistryServer]) -> None:
    """Such services sign with a key whose certificate is in the registry's rootcertbundle and name it
    by kid, with no x5c chain: Distribution accepts those tokens, so a drop-in replacement must."""
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(_name("token-signer")).issuer_name(_name("token-signer"))
        .public_key(signing_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .sign(signing_key, hashes.SHA256())
    )
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    auth = {"token": {"realm": "https://auth.example/token", "service": "registry.example",
                      "issuer": "auth.example", "rootcertbundle": str(bundle)}}
    ours = make_registry(config={"auth": auth})
    distribution = ReferenceRegistry(tmp_path / "reference", tmp_path / "reference.log")
    distribution.auth = auth

    def token(kid: str) -> str:
        issued = int(time.time())
        claims = {"iss": "auth.example", "aud": "registry.example", "sub": "alice", "iat": issued,
                  "nbf": issued - 5, "exp": issued + 300, "jti": os.urandom(8).hex(), "access": []}
        return jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": kid})

    def answer(server: RegistryServer | ReferenceRegistry, kid: str) -> int:
        return requests.get(f"{server.url}/v2/", headers={"Authorization": f"Bearer {token(kid)}"},
                            timeout=10).status_code

    with distribution:
        for server in (distribution, ours):
            assert answer(server, libtrust_kid(signing_key.public_key())) == 200, server.log_path
            # a kid naming a key the bundle does not hold is refused
            assert answer(server, libtrust_kid(other.public_key())) == 401, server.log_path
