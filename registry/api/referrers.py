"""GET /v2/<name>/referrers/<digest>"""

from aiohttp import web

from ..manifests import OCI_INDEX
from ..references import Digest
from .common import json_response, registry_of


async def list_referrers(request: web.Request, name: str, digest: str) -> web.Response:
    subject = Digest.parse(digest)
    artifact_type = request.query.get("artifactType") or None
    descriptors = await registry_of(request).referrers.list(name, subject, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    return json_response(index, content_type=OCI_INDEX, headers=headers)
