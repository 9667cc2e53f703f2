"""Ready-to-copy pull commands for the common clients, for the address the registry is reached at."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web


def registry_address(request: web.Request, base_url: str | None) -> tuple[str, bool]:
    """(host[:port] clients pull from, whether it speaks plain http)."""
    if base_url:
        parts = urlsplit(base_url)
        return parts.netloc, parts.scheme != "https"
    return request.host, not request.secure


def pull_commands(host: str, plain_http: bool, name: str, reference: str) -> list[tuple[str, str]]:
    """(client, command) pairs; a digest is pulled as name@digest, a tag as name:tag."""
    image = f"{host}/{name}{'@' if ':' in reference else ':'}{reference}"
    tls = " --tls-verify=false" if plain_http else ""
    return [
        ("docker", f"docker pull {image}"),
        ("podman", f"podman pull{tls} {image}"),
        ("skopeo", f"skopeo copy{' --src-tls-verify=false' if plain_http else ''} docker://{image} "
                   f"oci:{name.rsplit('/', 1)[-1]}:{reference.replace(':', '-')[:60]}"),
        ("crane", f"crane pull{' --insecure' if plain_http else ''} {image} image.tar"),
        ("nerdctl", f"nerdctl pull{' --insecure-registry' if plain_http else ''} {image}"),
    ]
