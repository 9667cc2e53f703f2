"""`python -m registry.healthcheck [--ready] [CONFIG]`: exit 0 when the registry this config describes is alive
(or, with --ready, ready) on this host.

The image's HEALTHCHECK runs it, so the address, the scheme (http.tls) and the REGISTRY_* overrides are the
server's own. It asks /livez (or /readyz), which need no credentials; only a 200 counts.
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from .config import ConfigError, Settings, load_config

#: what the probe asks for: alive (the process answers), or ready (the store works and no check fails)
HEALTH_PATH = "/livez"
READY_PATH = "/readyz"
TIMEOUT = 5.0
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def probe_url(settings: Settings, path: str = HEALTH_PATH) -> str:
    host, port = settings.http.host_port
    host = _WILDCARDS.get(host, host)
    scheme = "https" if settings.http.tls.certificate else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}{path}"


def check(url: str, timeout: float = TIMEOUT) -> tuple[bool, str]:
    """(healthy, what happened). The certificate is not checked: this is the server's own address, not its name."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {getattr(exc, 'reason', exc)}"
    return status == 200, f"{url}: {status}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = READY_PATH if "--ready" in args else HEALTH_PATH
    args = [arg for arg in args if arg != "--ready"]
    try:
        url = probe_url(load_config(args[0] if args else None), path)
    except ConfigError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    healthy, said = check(url)
    print(said, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
