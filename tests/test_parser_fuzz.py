"""Bounded fuzzing (hypothesis) of the parsers that read what clients send: manifests, Range and
Content-Range. Whatever the input, the answer is a documented 4xx or the correct result, never an
exception: a manifest the parser accepts satisfies openapi.yaml's schema for its media type, a Range
is served exactly as RFC 9110 reads it, and a chunk is stored exactly when its Content-Range fits.
"""

from __future__ import annotations

import json
import re
import string
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.api.blobs import parse_range
from registry.errors import RegistryError
from registry.manifests import (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, INDEX_TYPES, OCI_INDEX, OCI_MANIFEST,
                                parse_manifest)
from registry.numbers import MAX_DIGITS
from registry.references import Digest

from .servers import RegistryServer

SPEC = yaml.safe_load((Path(__file__).resolve().parent.parent / "openapi.yaml").read_text())
SCHEMA_OF = {OCI_MANIFEST: "ImageManifest", OCI_INDEX: "ImageIndex", DOCKER_MANIFEST: "DockerManifest",
             DOCKER_MANIFEST_LIST: "DockerManifestList"}
FUZZ = settings(max_examples=400, deadline=None, database=None)
OVER_HTTP = settings(max_examples=150, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
#: larger than any blob: significant digits past MAX_DIGITS (20) are never a size, and Python's int() refuses
#: more than 4,300; the registry reads such a number as one past every size (registry/numbers.py)
HUGE = 10**MAX_DIGITS


def spec_validator(media_type: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{SCHEMA_OF[media_type]}", "components": SPEC["components"]}
    return jsonschema.Draft202012Validator(schema)


# -- manifests ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
media_types = st.sampled_from([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
                               "application/vnd.oci.image.layer.v1.tar+gzip", "application/json", "x/y", "bad"])
digests = st.one_of(
    st.builds(lambda h: f"sha256:{h}", st.text("0123456789abcdef", min_size=64, max_size=64)),
    st.builds(lambda h: f"sha512:{h}", st.text("0123456789abcdef", min_size=128, max_size=128)),
    st.text(max_size=80))
descriptors = st.fixed_dictionaries(
    {"mediaType": media_types, "digest": digests, "size": st.integers(-1, 2**64)},
    optional={"urls": st.lists(st.sampled_from(["https://example.com/l.tgz", "", "l.tgz"]), max_size=2),
              "annotations": st.dictionaries(st.text(max_size=8), st.text(max_size=8) | json_values, max_size=2),
              "artifactType": media_types,
              "data": st.text(max_size=8) | json_values,
              "platform": st.fixed_dictionaries({}, optional={
                  "architecture": st.text(max_size=6) | json_values, "os": st.text(max_size=6),
                  "features": st.lists(st.text(max_size=4)) | json_values})})
manifests = st.fixed_dictionaries(
    {},
    optional={"schemaVersion": st.sampled_from([2, 1, "2", 2.0, True]) | json_values,
              "mediaType": media_types | json_values,
              "config": descriptors | json_values,
              "layers": st.lists(descriptors, max_size=3) | json_values,
              "manifests": st.lists(descriptors, max_size=3) | json_values,
              "subject": descriptors | json_values,
              "artifactType": media_types | json_values,
              "annotations": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2) | json_values})
bodies = st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                   manifests.map(lambda m: json.dumps(m).encode()), st.just(b"[" * 100_000))


@FUZZ
@given(body=bodies, content_type=st.none() | media_types | st.text(max_size=30))
def test_manifest_parser_any_input(body: bytes, content_type: str | None) -> None:
    """MANIFEST_INVALID (400), or a manifest of a supported type that openapi.yaml's schema accepts."""
    try:
        manifest = parse_manifest(body, content_type, Digest.of(body))
    except RegistryError as error:
        assert error.code == "MANIFEST_INVALID" and error.status == 400, error
        return
    assert manifest.body == body and manifest.digest == Digest.of(body)
    errors = [e.message for e in spec_validator(manifest.media_type).iter_errors(manifest.document)]
    assert not errors, (manifest.media_type, manifest.document, errors)
    if manifest.media_type in INDEX_TYPES:
        assert isinstance(manifest.document["manifests"], list)


# -- Range -------------------------------------------------------------------------------------------

def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= MAX_DIGITS else HUGE


def expected_range(header: str, size: int) -> tuple[int, int] | None | str:
    """RFC 9110's reading of one byte range: (offset, count), None for the whole blob, "416"."""
    match = re.fullmatch(r"bytes=([0-9]*)-([0-9]*)", header.strip())
    if not match or match.groups() == ("", ""):
        return None  # not one range: ignored
    first, last = match.groups()
    if not first:
        count = min(_number(last), size)
        return (size - count, count) if count else "416"
    start = _number(first)
    end = min(_number(last), size - 1) if last else size - 1
    return (start, end - start + 1) if start < size and end >= start else "416"


short_digits = st.text("0123456789", max_size=25)
digit_strings = st.one_of(short_digits,
                          st.text("0123456789", min_size=4290, max_size=4400))
range_headers = st.one_of(
    st.text(max_size=40),
    st.builds(lambda pre, a, b, post: f"{pre}bytes={a}-{b}{post}", st.sampled_from(["", " ", "\t"]), digit_strings,
              digit_strings, st.sampled_from(["", " ", ",0-1", ", 5-", "x"])),
    st.builds(lambda unit, a, b: f"{unit}={a}-{b}", st.sampled_from(["Bytes", "items", "bytes ", ""]),
              digit_strings, digit_strings))


@FUZZ
@given(header=range_headers, size=st.one_of(st.integers(0, 10), st.integers(0, 2**40)))
def test_range_parser_any_header(header: str, size: int) -> None:
    """One byte range exactly as RFC 9110 reads it; 416 RANGE_INVALID beyond the end; anything else ignored."""
    expected = expected_range(header, size)
    try:
        got = parse_range(header, size)
    except RegistryError as error:
        assert expected == "416", (header, size, error)
        assert error.code == "RANGE_INVALID" and error.status == 416
        assert error.headers["Content-Range"] == f"bytes */{size}"
        return
    assert got == expected, (header, size)


# -- Content-Range, over HTTP ------------------------------------------------------------------------

#: what a header value may hold (RFC 9110 field-value); control characters never reach the application
FIELD_VALUE = string.digits + string.ascii_letters + string.punctuation + " \t"
content_ranges = st.one_of(
    st.text(FIELD_VALUE, max_size=30).map(str.strip),  # requests refuses to send a value with spaces around it
    # one huge number at most: a header line over 8 KiB is refused by the HTTP parser, before the registry
    st.builds(lambda unit, pair: f"{unit}{pair[0]}-{pair[1]}", st.sampled_from(["", "bytes ", "bytes=", "items "]),
              st.one_of(st.tuples(digit_strings, short_digits), st.tuples(short_digits, digit_strings))))


@pytest.fixture(scope="module")
def upload(filesystem_registry: RegistryServer) -> dict[str, Any]:
    """One upload session for the whole fuzz run, and what it holds."""
    r = requests.post(f"{filesystem_registry.url}/v2/fuzz/{uuid.uuid4().hex[:8]}/blobs/uploads/", timeout=30)
    assert r.status_code == 202, r.text
    return {"url": filesystem_registry.url + r.headers["Location"], "data": b""}


@OVER_HTTP
@given(content_range=content_ranges, chunk=st.binary(min_size=0, max_size=8))
def test_content_range_any_header(upload: dict[str, Any], content_range: str, chunk: bytes) -> None:
    """A chunk is taken exactly when its Content-Range covers its bytes and starts where the upload
    ends; otherwise 416 RANGE_INVALID (malformed, or not where the upload ends) or 400 SIZE_INVALID."""
    size = len(upload["data"])
    r = requests.patch(upload["url"], data=chunk, headers={"Content-Range": content_range}, timeout=30)
    match = re.fullmatch(r"(?:bytes[ =])?([0-9]+)-([0-9]+)", content_range.strip())
    first, last = (_number(match.group(1)), _number(match.group(2))) if match else (0, -1)
    if match is None or last < first:
        expected = 416, "RANGE_INVALID"
    elif last - first + 1 != len(chunk):
        expected = 400, "SIZE_INVALID"
    elif first != size:
        expected = 416, "RANGE_INVALID"
    else:
        expected = 202, None
        upload["data"] += chunk
    assert r.status_code == expected[0], (content_range, r.status_code, r.text)
    if expected[1]:
        assert r.headers["Content-Type"].startswith("application/json"), (content_range, r.headers, r.text)
        assert r.json()["errors"][0]["code"] == expected[1]
    status = requests.get(upload["url"], timeout=30)
    assert status.headers["Range"] == f"0-{max(len(upload['data']) - 1, 0)}"
