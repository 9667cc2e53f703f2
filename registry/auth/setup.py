"""Build the guard and the built-in token service from the `auth` section of the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .access import AccessRules
from .guard import Guard
from .htpasswd import Htpasswd, HtpasswdError, read_entries
from .token_service import TokenService
from .tokens import TokenSigner, TokenVerifier, load_bundle, load_jwks


class AuthConfigError(ValueError):
    pass


def build_auth(auth: dict[str, Any] | None, data_dir: str) -> tuple[Guard | None, TokenService | None]:
    """No `auth` section: an open registry, as Distribution without auth."""
    if not auth:
        return None, None
    try:
        rules = AccessRules.from_config(auth.get("access"))
    except ValueError as exc:
        raise AuthConfigError(str(exc)) from None
    htpasswd_conf = auth.get("htpasswd") or {}
    htpasswd = Htpasswd(htpasswd_conf["path"]) if htpasswd_conf.get("path") else None
    if htpasswd is not None:
        try:  # a file the registry cannot read must stop it here, not fail every login with a 500
            read_entries(htpasswd.path)
        except HtpasswdError as exc:
            raise AuthConfigError(str(exc)) from None
    token_conf = auth.get("token")
    if not token_conf:
        if htpasswd is None:
            if "access" in auth:
                raise AuthConfigError("auth.access needs auth.htpasswd or auth.token")
            return None, None
        return Guard("htpasswd", str(htpasswd_conf.get("realm", "registry")), rules, htpasswd=htpasswd), None

    service = str(token_conf.get("service") or "registry")
    issuer = str(token_conf.get("issuer") or "registry-token-service")
    verifier = TokenVerifier(service, issuer)
    if token_conf.get("rootcertbundle"):
        verifier.roots = load_bundle(token_conf["rootcertbundle"])
    if token_conf.get("jwks"):
        verifier.keys.update(load_jwks(token_conf["jwks"]))
    token_service = None
    builtin = token_conf.get("builtin")
    if builtin:
        if htpasswd is None:
            raise AuthConfigError("auth.token.builtin needs auth.htpasswd.path for its users")
        key_path = (builtin.get("key") if isinstance(builtin, dict) else None) or str(Path(data_dir) / "token-key.pem")
        signer = TokenSigner(key_path, issuer, service)
        verifier.keys[signer.kid] = signer.public_key
    elif not verifier.roots and not verifier.keys:
        raise AuthConfigError("auth.token needs rootcertbundle, jwks or builtin to trust any token")
    realm = token_conf.get("realm")
    if not realm and not builtin:
        raise AuthConfigError("auth.token.realm is required with an external token service")
    guard = Guard("token", str(realm) if realm else None, rules, htpasswd=htpasswd, verifier=verifier,
                  service=service)
    if builtin:
        token_service = TokenService(signer, htpasswd, rules, guard)  # type: ignore[arg-type]
    return guard, token_service
