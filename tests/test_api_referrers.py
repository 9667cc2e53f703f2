"""The OCI 1.1 referrers API: manifests pointing at a subject, listed as an image index."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from .client import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, RegistryClient, descriptor, digest_of, error_codes, \
    unique_repo

EMPTY = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"
CUSTOM_CONFIG = "application/vnd.example.config.v1+json"


def push(client: RegistryClient, repo: str, doc: dict[str, Any], media_type: str = OCI_MANIFEST) -> tuple[str, bytes]:
    """Push doc by digest; returns its digest and bytes."""
    body = json.dumps(doc).encode()
    r = client.push_manifest(repo, digest_of(body), body, media_type)
    assert r.status_code == 201, r.text
    return digest_of(body), body


def artifact(client: RegistryClient, repo: str, subject: dict[str, Any], artifact_type: str | None = None,
             config_type: str = EMPTY, **annotations: str) -> dict[str, Any]:
    """An artifact manifest on subject (its blobs pushed), with a unique layer so each digest differs."""
    config = b"{}" if config_type == EMPTY else json.dumps({"n": uuid.uuid4().hex}).encode()
    layer = uuid.uuid4().bytes
    client.push_blob(repo, config)
    client.push_blob(repo, layer)
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, config),
        "layers": [descriptor("application/octet-stream", layer)],
        "subject": subject,
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    if annotations:
        doc["annotations"] = annotations
    return doc


def referrers(client: RegistryClient, repo: str, digest: str, **params: str) -> requests.Response:
    r = client.request("GET", f"/v2/{repo}/referrers/{digest}", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0] == OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    assert isinstance(index["manifests"], list)
    return r


def by_digest(r: requests.Response) -> dict[str, dict[str, Any]]:
    manifests = r.json()["manifests"]
    found = {d["digest"]: d for d in manifests}
    assert len(found) == len(manifests), "duplicate referrer descriptors"
    return found


@pytest.fixture
def subject(client: RegistryClient) -> tuple[str, dict[str, Any]]:
    """A repository and the descriptor of an image pushed to it."""
    repo = unique_repo("referrers")
    digest, body = client.push_image(repo, "v1")
    return repo, descriptor(OCI_MANIFEST, body)


def test_referrers_listed_with_descriptors(client: RegistryClient, subject: tuple[str, dict[str, Any]]) -> None:
    """Each referrer appears once, described by media type, size, digest, artifactType and annotations."""
    repo, subj = subject
    sbom_digest, sbom = push(client, repo, artifact(client, repo, subj, SBOM, **{"org.example.kind": "sbom"}))
    sig_digest, sig = push(client, repo, artifact(client, repo, subj, SIGNATURE))
    # no artifactType: the config's media type stands in for it
    img_digest, img = push(client, repo, artifact(client, repo, subj, None, CUSTOM_CONFIG))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": SBOM, "manifests": [],
             "subject": subj, "annotations": {"org.example.index": "yes"}}
    idx_digest, idx = push(client, repo, index, OCI_INDEX)
    # not a referrer: no subject
    client.push_image(repo, "unrelated")

    found = by_digest(referrers(client, repo, subj["digest"]))
    assert found == {
        sbom_digest: {"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": len(sbom), "artifactType": SBOM,
                      "annotations": {"org.example.kind": "sbom"}},
        sig_digest: {"mediaType": OCI_MANIFEST, "digest": sig_digest, "size": len(sig), "artifactType": SIGNATURE},
        img_digest: {"mediaType": OCI_MANIFEST, "digest": img_digest, "size": len(img),
                     "artifactType": CUSTOM_CONFIG},
        idx_digest: {"mediaType": OCI_INDEX, "digest": idx_digest, "size": len(idx), "artifactType": SBOM,
                     "annotations": {"org.example.index": "yes"}},
    }


def test_no_referrers_is_empty_index(client: RegistryClient, subject: tuple[str, dict[str, Any]]) -> None:
    """A subject with no referrers, or one never pushed, gets an empty index rather than 404."""
    repo, subj = subject
    assert referrers(client, repo, subj["digest"]).json()["manifests"] == []
    assert referrers(client, repo, digest_of(b"never pushed")).json()["manifests"] == []


def test_referrer_pushed_before_subject(client: RegistryClient) -> None:
    """Clients may push a referrer first; it is listed under the subject's digest straight away."""
    repo = unique_repo("referrers")
    subj = descriptor(OCI_MANIFEST, b'{"schemaVersion": 2}' + uuid.uuid4().bytes)
    digest, _ = push(client, repo, artifact(client, repo, subj, SBOM))
    assert list(by_digest(referrers(client, repo, subj["digest"]))) == [digest]


def test_artifact_type_filter(client: RegistryClient, subject: tuple[str, dict[str, Any]]) -> None:
    """artifactType filters the list (including config-type fallbacks) and is announced by a header."""
    repo, subj = subject
    sboms = {push(client, repo, artifact(client, repo, subj, SBOM))[0] for _ in range(2)}
    signature, _ = push(client, repo, artifact(client, repo, subj, SIGNATURE))
    fallback, _ = push(client, repo, artifact(client, repo, subj, None, CUSTOM_CONFIG))

    unfiltered = referrers(client, repo, subj["digest"])
    assert "OCI-Filters-Applied" not in unfiltered.headers
    assert set(by_digest(unfiltered)) == sboms | {signature, fallback}

    for artifact_type, expected in [(SBOM, sboms), (SIGNATURE, {signature}), (CUSTOM_CONFIG, {fallback}),
                                    ("application/vnd.example.none", set())]:
        r = referrers(client, repo, subj["digest"], artifactType=artifact_type)
        assert r.headers["OCI-Filters-Applied"] == "artifactType"
        assert set(by_digest(r)) == expected
        assert all(d["artifactType"] == artifact_type for d in r.json()["manifests"])


def test_deleted_referrer_leaves_list(client: RegistryClient, subject: tuple[str, dict[str, Any]]) -> None:
    repo, subj = subject
    gone, _ = push(client, repo, artifact(client, repo, subj, SBOM))
    kept, _ = push(client, repo, artifact(client, repo, subj, SBOM))
    assert set(by_digest(referrers(client, repo, subj["digest"]))) == {gone, kept}
    assert client.request("DELETE", f"/v2/{repo}/manifests/{gone}").status_code == 202
    assert set(by_digest(referrers(client, repo, subj["digest"]))) == {kept}


def test_referrers_scoped_to_repository(client: RegistryClient, subject: tuple[str, dict[str, Any]]) -> None:
    """A referrer pushed to another repository is not a referrer here."""
    repo, subj = subject
    other = unique_repo("referrers")
    elsewhere, _ = push(client, other, artifact(client, other, subj, SBOM))
    here, _ = push(client, repo, artifact(client, repo, subj, SBOM))
    assert set(by_digest(referrers(client, repo, subj["digest"]))) == {here}
    assert set(by_digest(referrers(client, other, subj["digest"]))) == {elsewhere}


def test_referrer_tagged_twice_listed_once(client: RegistryClient, subject: tuple[str, dict[str, Any]]) -> None:
    """Pushing the same referrer again (by tag this time) does not duplicate its entry."""
    repo, subj = subject
    digest, body = push(client, repo, artifact(client, repo, subj, SBOM))
    assert client.push_manifest(repo, "sbom", body).status_code == 201
    assert list(by_digest(referrers(client, repo, subj["digest"]))) == [digest]


def test_referrer_of_index_subject(client: RegistryClient) -> None:
    """Subjects can be indexes too, and referrers of referrers chain."""
    repo = unique_repo("referrers")
    child, child_body = client.push_image(repo, "child")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, child_body)]}
    idx_digest, idx_body = push(client, repo, index, OCI_INDEX)
    sig, sig_body = push(client, repo, artifact(client, repo, descriptor(OCI_INDEX, idx_body), SIGNATURE))
    countersig, _ = push(client, repo, artifact(client, repo, descriptor(OCI_MANIFEST, sig_body), SIGNATURE))
    assert list(by_digest(referrers(client, repo, idx_digest))) == [sig]
    assert list(by_digest(referrers(client, repo, sig))) == [countersig]
    assert referrers(client, repo, child).json()["manifests"] == []


def test_empty_config_artifact_without_artifact_type(client: RegistryClient,
                                                     subject: tuple[str, dict[str, Any]]) -> None:
    """With neither artifactType nor a telling config, the config's media type is what there is."""
    repo, subj = subject
    digest, _ = push(client, repo, artifact(client, repo, subj, None, EMPTY))
    assert by_digest(referrers(client, repo, subj["digest"]))[digest]["artifactType"] == EMPTY


@pytest.mark.parametrize("digest", ["sha256:xyz", "notadigest", "md5:" + "0" * 32, "sha256:" + "A" * 64,
                                    "sha256:" + "0" * 63, "sha512:" + "0" * 64])
def test_invalid_digest(client: RegistryClient, subject: tuple[str, dict[str, Any]], digest: str) -> None:
    repo, _ = subject
    r = client.request("GET", f"/v2/{repo}/referrers/{digest}")
    assert r.status_code == 400, r.text
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert "DIGEST_INVALID" in error_codes(r)


def test_config_blob_fallback_uses_config_not_layers(client: RegistryClient,
                                                     subject: tuple[str, dict[str, Any]]) -> None:
    """The fallback artifactType is the config's media type, never a layer's."""
    repo, subj = subject
    doc = artifact(client, repo, subj, None, OCI_CONFIG)
    doc["layers"][0]["mediaType"] = SBOM
    digest, _ = push(client, repo, doc)
    assert by_digest(referrers(client, repo, subj["digest"]))[digest]["artifactType"] == OCI_CONFIG
