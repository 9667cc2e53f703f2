"""An operator's mistakes: each one is refused with one line saying what to fix, never a traceback,
and no mistake leaves the registry quietly open, or storing somewhere else.

Exit status 2: the configuration (a key, a value, a file it names) or the command line is wrong;
1: the registry or a command could not do its work (a port in use, a file it cannot write).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import yaml

from .cli import one_line_error, run_registry, store_config
from .client import RegistryClient, unique_repo
from .servers import MakeRegistry, free_port


def free_addr() -> str:
    """Where a server that wrongly starts would listen: never the default port, which may be in use."""
    return f"127.0.0.1:{free_port()}"

CONFIG_MISTAKES = {
    "auth-typo": ("auth:\n  htpasswd:\n    pth: users\n", "auth.htpasswd.pth: unknown key; did you mean path?"),
    "empty-root": ("storage:\n  filesystem:\n    rootdirectory:\n", "storage.filesystem.rootdirectory: is empty"),
    "top-level-typo": ("htpp:\n  addr: :5000\n", "htpp: unknown key; did you mean http?"),
    "bad-boolean": ("storage:\n  delete:\n    enabled: flase\n",
                    "storage.delete.enabled: expected true or false (or yes/no, 1/0), not 'flase'"),
    "log-level": ("log:\n  level: verbose\n", "log.level: expected one of debug, info, warn, error, not 'verbose'"),
    "duration": ("storage:\n  gc:\n    interval: soon\n", "storage.gc.interval: expected a duration such as 90s"),
    "driver": ("storage: azure\n", "the azure storage driver is not supported"),
    "two-drivers": ("storage:\n  filesystem: {}\n  inmemory: {}\n", "exactly one storage driver"),
    "key-twice": ("http:\n  addr: :1\nhttp:\n  addr: :2\n", "key 'http' appears twice"),
    "empty-auth": ("auth: {}\n", "auth: configure htpasswd or token"),
    "cache-alone": ("proxy:\n  cache:\n    maxsize: 1GB\n", "proxy: cache needs remoteurl or upstreams"),
    "not-a-mapping": ("- storage\n", "must be a YAML mapping"),
    "bad-yaml": ("http: [unclosed\n", "invalid YAML"),
    "s3-chunksize": ("storage:\n  s3: {bucket: b, chunksize: 1MB}\n", "storage.s3.chunksize: must be 5242880 or more"),
    "tls-half": ("http:\n  tls: {certificate: a.pem}\n", "http.tls: set both certificate and key"),
    "token-trust": ("auth:\n  token: {realm: 'https://auth.example/token'}\n", "auth.token: set rootcertbundle or jwks"),
    "access-action": ("auth:\n  htpasswd: {path: users}\n  access:\n    rules: [{repositories: [a], actions: [pul]}]\n",
                      "auth.access.rules[0].actions[0]: expected 'pull', 'push', 'delete' or '*', not 'pul'"),
    "upstream-url": ("proxy:\n  remoteurl: ftp://mirror\n", "proxy.remoteurl: expected an http:// or https:// URL"),
}
#: the `storage.retention` and `proxy.cache` sections, refused the same way
SECTION_MISTAKES = {
    "keeptags-regex": ({"storage": {"retention": [{"repositories": ["a/*"], "keeptags": ["(unclosed"]}]}},
                       "storage.retention[0].keeptags[0]: bad regular expression '(unclosed'"),
    "retention-key": ({"storage": {"retention": [{"repositories": ["a/*"], "keeplast": 3, "keep": 1}]}},
                      "storage.retention[0].keep: unknown key; did you mean keeptags?"),
    "retention-repositories": ({"storage": {"retention": [{"keeplast": 3}]}},
                               "storage.retention[0].repositories: required, but not set"),
    "retention-keeps-nothing": ({"storage": {"retention": [{"repositories": ["a/*"]}]}},
                                "storage.retention[0]: needs keeplast, keeptags or keepdays"),
    "keeplast-negative": ({"storage": {"retention": [{"repositories": ["a/*"], "keeplast": -1}]}},
                          "storage.retention[0].keeplast: must be 0 or more"),
    "retention-mapping": ({"storage": {"retention": {"repositories": ["a/*"]}}}, "storage.retention: expected a list"),
    "cache-size": ({"proxy": {"remoteurl": "https://r.example", "cache": {"maxsize": "50XB"}}},
                   "proxy.cache.maxsize: expected a size such as 500MB"),
    "cache-age": ({"proxy": {"remoteurl": "https://r.example", "cache": {"maxage": "forever"}}},
                  "proxy.cache.maxage: expected a duration"),
    "cache-interval": ({"proxy": {"remoteurl": "https://r.example", "cache": {"interval": "0s"}}},
                       "proxy.cache.interval: must be greater than 0"),
    "cache-key": ({"proxy": {"remoteurl": "https://r.example", "cache": {"max_size": "1GB"}}},
                  "proxy.cache.max_size: unknown key; did you mean maxsize?"),
    "header-timeout": ({"http": {"timeouts": {"header": "0s"}}}, "http.timeouts.header: must be greater than 0"),
    "timeout-key": ({"http": {"timeouts": {"bodi": "5s"}}}, "http.timeouts.bodi: unknown key; did you mean body?"),
    "connections": ({"http": {"limits": {"connections": 0}}}, "http.limits.connections: must be 1 or more"),
    "manifestmemory": ({"http": {"limits": {"manifestmemory": "1MiB"}}},
                       "http.limits.manifestmemory: must be 4194304 or more"),
    "fsync": ({"storage": {"filesystem": {"fsync": "sometimes"}}}, "storage.filesystem.fsync: expected true or false"),
    "sampling": ({"tracing": {"enabled": True, "samplingratio": 2}},
                 "tracing.samplingratio: input should be less than or equal to 1"),
    "collector": ({"tracing": {"endpoint": "collector:4318"}},
                  "tracing.endpoint: expected an http:// or https:// URL, not 'collector:4318'"),
}
CONFIG_MISTAKES.update({name: (yaml.safe_dump(config), message) for name, (config, message) in SECTION_MISTAKES.items()})


@pytest.mark.parametrize("text,expected", CONFIG_MISTAKES.values(), ids=CONFIG_MISTAKES.keys())
def test_config_mistakes_are_refused_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "config.yml"
    config.write_text(text)
    line = one_line_error(run_registry("serve", "--config", str(config), env={"REGISTRY_HTTP_ADDR": free_addr()},
                                       cwd=tmp_path), 2)
    assert expected in line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name,value,expected", [
    ("REGISTRY_HTTP_ADRR", "x", "REGISTRY_HTTP_ADRR: no configuration key http.adrr; did you mean REGISTRY_HTTP_ADDR?"),
    ("REGISTRY_STORAGE_DELETE_ENABLED", "maybe", "environment variable REGISTRY_STORAGE_DELETE_ENABLED: "
                                                 "storage.delete.enabled: expected true or false"),
    ("REGISTRY_HTTP_ADDR", "127.0.0.1:0", "http.addr: the port in '127.0.0.1:0' must be a number from 1 to 65535"),
    ("REGISTRY_STORAGE_RETENTION_KEEPLAST", "3", "storage.retention is a list; address an element by its index"),
])
def test_environment_mistakes_name_the_variable(tmp_path: Path, name: str, value: str, expected: str) -> None:
    done = run_registry("serve", "--root", str(tmp_path / "data"), env={"REGISTRY_HTTP_ADDR": free_addr(), name: value})
    assert expected in one_line_error(done, 2)


def test_flag_mistakes_name_the_flag(tmp_path: Path) -> None:
    done = run_registry("serve", "--addr", "127.0.0.1:99999", "--root", str(tmp_path / "data"))
    assert "--addr: http.addr: the port in '127.0.0.1:99999' must be a number from 1 to 65535" in \
        one_line_error(done, 2)


def test_environment_reaches_keys_holding_underscores_and_list_elements(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("storage:\n  s3:\n    bucket: b\n  retention:\n    - repositories: [team/*]\n      keeplast: 1\n")
    done = run_registry("config", "check", str(config),
                        env={"REGISTRY_STORAGE_S3_MAX_ATTEMPTS": "3", "REGISTRY_STORAGE_RETENTION_0_KEEPLAST": "5",
                             # what Kubernetes sets for a Service named "registry": not configuration
                             "REGISTRY_PORT": "tcp://10.0.0.1:5000", "REGISTRY_SERVICE_HOST": "10.0.0.1"})
    assert done.returncode == 0, done.stderr
    effective = yaml.safe_load(done.stdout)
    assert effective["storage"]["s3"]["max_attempts"] == 3
    assert effective["storage"]["retention"][0]["keeplast"] == 5


def test_config_check_prints_the_effective_configuration_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "http": {"secret": "http-secret-value"},
        "storage": {"s3": {"bucket": "b", "accesskey": "AKIA", "secretkey": "s3-secret-value"},
                    "cache": {"blobdescriptor": "inmemory"}},
        "proxy": {"remoteurl": "https://registry-1.docker.io", "username": "u", "password": "hub-password"},
    }))
    done = run_registry("config", "check", str(config), env={"REGISTRY_HTTP_ADDR": ":6000"})
    assert done.returncode == 0, done.stderr
    for secret in ("http-secret-value", "s3-secret-value", "hub-password"):
        assert secret not in done.stdout + done.stderr
    effective = yaml.safe_load(done.stdout)
    assert effective["http"]["addr"] == ":6000"
    assert effective["storage"]["s3"]["secretkey"] == "**********"
    assert effective["storage"]["delete"] == {"enabled": True}
    assert "# ignored: storage.cache:" in done.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("storage:\n  delete:\n    enabled: flase\n")
    one_line_error(run_registry("config", "check", str(bad)), 2)


@pytest.mark.parametrize("spelling", ["false", "no", "0", "False"])
def test_quoted_false_turns_deletes_off(make_registry: MakeRegistry, spelling: str) -> None:
    server = make_registry(config={"storage": {"delete": {"enabled": spelling}}})
    client = RegistryClient(server.url)
    repo = unique_repo()
    digest, _ = client.push_image(repo, "v1")
    r = client.request("DELETE", f"/v2/{repo}/manifests/{digest}")
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert client.request("GET", f"/v2/{repo}/manifests/v1").status_code == 200


def test_startup_line_states_what_matters_for_security(make_registry: MakeRegistry) -> None:
    server = make_registry(config={"storage": {"delete": {"enabled": False}}, "redis": {"addr": "redis:6379"}})
    log = server.log_path.read_text()
    line = next(line for line in log.splitlines() if "listening on" in line)
    assert " INFO " in line
    assert f"listening on http://127.0.0.1:{server.port}, storing in {server.root} (filesystem)" in line
    assert line.endswith("auth off, TLS off, deletes off, read-only off")
    assert "WARNING registry: config: ignoring redis: no Redis" in log


def test_port_in_use_and_foreign_address_are_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_registry("serve", "--addr", f"127.0.0.1:{port}", "--root", str(tmp_path / "data"))
        assert "the port is in use" in one_line_error(done, 1)
    done = run_registry("serve", "--addr", "192.0.2.1:5000", "--root", str(tmp_path / "data"))  # TEST-NET-1
    assert "this host has no such address" in one_line_error(done, 1)


def test_storage_directory_that_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.write_text("not a directory")
    done = run_registry("serve", "--addr", free_addr(), "--root", str(root))
    assert f"storage.filesystem.rootdirectory {root} is a file, not a directory" in one_line_error(done, 2)


def test_unusable_htpasswd_file_is_named(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("bob:{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs=\n")  # htpasswd -s: SHA-1, which Distribution refuses too
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"auth": {"htpasswd": {"path": str(htpasswd)}}}))
    done = run_registry("serve", "--config", str(config), "--addr", free_addr(), "--root", str(tmp_path / "data"))
    assert f"auth.htpasswd.path: {htpasswd}:1: not a bcrypt htpasswd entry" in one_line_error(done, 2)


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    missing = tmp_path / "nowhere.crt"
    config.write_text(yaml.safe_dump({"http": {"tls": {"certificate": str(missing), "key": str(missing)}}}))
    done = run_registry("serve", "--config", str(config), "--addr", free_addr(), "--root", str(tmp_path / "data"))
    assert f"http.tls.certificate: no such file {missing}" in one_line_error(done, 2)


def test_maintenance_commands_take_root_and_refuse_a_directory_without_a_registry(
        make_registry: MakeRegistry, tmp_path: Path) -> None:
    server = make_registry()
    repo = unique_repo()
    RegistryClient(server.url).push_image(repo, "v1")
    for command in ("du", "verify", "gc"):
        done = run_registry(command, cwd=tmp_path)
        assert f"no registry storage in {tmp_path / 'data'}" in one_line_error(done, 2), command
        assert not (tmp_path / "data").exists()
    du = run_registry("du", "--root", str(server.root))
    assert du.returncode == 0, du.stderr
    assert any(line.startswith(f"{repo} ") for line in du.stdout.splitlines())
    verify = run_registry("verify", "--root", str(server.root))
    assert verify.returncode == 0, verify.stderr
    dry = run_registry("gc", "--dry-run", "--config", str(store_config(server)))
    assert dry.returncode == 0 and "would free 0 object(s)" in dry.stdout, dry.stdout + dry.stderr


def test_user_command(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    listed = run_registry("user", "list", "--htpasswd", str(htpasswd))
    assert f"no htpasswd file {htpasswd}" in one_line_error(listed, 1)
    added = run_registry("user", "add", "ann", "--htpasswd", str(htpasswd), "--password-stdin", stdin="ann-pw\n")
    assert added.returncode == 0 and added.stdout == f"added user ann in {htpasswd}\n", added.stderr
    text = htpasswd.read_text()
    assert re.fullmatch(r"ann:\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}\n", text), text
    assert (htpasswd.stat().st_mode & 0o777) == 0o600
    again = run_registry("user", "add", "ann", "--htpasswd", str(htpasswd), "--password-stdin", stdin="other\n")
    assert "user 'ann' exists" in one_line_error(again, 1)
    assert htpasswd.read_text() == text
    changed = run_registry("user", "passwd", "ann", "--htpasswd", str(htpasswd), "--password-stdin", stdin="new\n")
    assert changed.stdout == f"changed the password of user ann in {htpasswd}\n", changed.stderr
    assert htpasswd.read_text() != text
    no_terminal = run_registry("user", "add", "bob", "--htpasswd", str(htpasswd))
    assert "no terminal to ask for the password on" in one_line_error(no_terminal, 1)
    too_long = run_registry("user", "add", "bob", "--htpasswd", str(htpasswd), "--password-stdin", stdin="x" * 73)
    assert "longer than bcrypt's 72 bytes" in one_line_error(too_long, 1)
    directory = run_registry("user", "add", "bob", "--htpasswd", str(tmp_path), "--password-stdin", stdin="pw\n")
    assert "is a directory" in one_line_error(directory, 1)
    removed = run_registry("user", "remove", "ann", "--htpasswd", str(htpasswd))
    assert removed.stdout == f"removed user ann from {htpasswd}\n"
    assert run_registry("user", "list", "--htpasswd", str(htpasswd)).stdout == ""
    helped = run_registry("user", "--help")
    for action in ("add", "passwd", "remove", "list"):
        assert f"    {action} " in helped.stdout


def test_gen_cert_refuses_bad_input_and_keeps_existing_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "r.crt", tmp_path / "r.key"
    paths = ["--cert", str(cert), "--key", str(key)]
    assert "--days must be 1 or more" in one_line_error(run_registry("gen-cert", "h", "--days", "-5", *paths), 2)
    assert "'bad host!!' is neither a host name nor an IP address" in \
        one_line_error(run_registry("gen-cert", "bad host!!", *paths), 2)
    assert run_registry("gen-cert", "registry.example", *paths).returncode == 0
    first = cert.read_bytes()
    assert "exist; remove them or pass --force" in one_line_error(run_registry("gen-cert", "other", *paths), 1)
    assert cert.read_bytes() == first
    assert run_registry("gen-cert", "other", "--force", *paths).returncode == 0
    assert cert.read_bytes() != first
