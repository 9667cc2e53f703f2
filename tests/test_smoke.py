from .client import RegistryClient, unique_repo


def test_version_check(client: RegistryClient) -> None:
    r = client.request("GET", "/v2/")
    assert r.status_code == 200
    assert r.json() == {}
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_push_and_pull_image(client: RegistryClient) -> None:
    repo = unique_repo()
    digest, body = client.push_image(repo, "v1")
    r = client.request("GET", f"/v2/{repo}/manifests/v1")
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["Docker-Content-Digest"] == digest
