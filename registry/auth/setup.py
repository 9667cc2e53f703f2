"""Build the guard and the built-in token service from the checked `auth` section."""

from __future__ import annotations

from pathlib import Path

from ..config import schema
from .access import AccessRules
from .guard import Guard
from .htpasswd import Htpasswd, HtpasswdError, read_entries
from .token_service import TokenService
from .tokens import TokenSigner, TokenVerifier, load_bundle, load_jwks


class AuthSetupError(Exception):
    """A file the auth section names cannot be used; the message names it."""


def build_auth(auth: schema.Auth | None, data_dir: str) -> tuple[Guard | None, TokenService | None]:
    """No `auth` section: an open registry, as Distribution without auth."""
    if auth is None:
        return None, None
    rules = AccessRules.from_settings(auth.access)
    htpasswd = Htpasswd(auth.htpasswd.path) if auth.htpasswd is not None else None
    if htpasswd is not None:
        try:  # a file the registry cannot read must stop it here, not fail every login with a 500
            read_entries(htpasswd.path)
        except (HtpasswdError, OSError, UnicodeDecodeError) as exc:
            raise AuthSetupError(f"auth.htpasswd.path: {exc}") from None
    token = auth.token
    if token is None:
        assert htpasswd is not None and auth.htpasswd is not None  # the schema requires one of them
        return Guard("htpasswd", auth.htpasswd.realm, rules, htpasswd=htpasswd), None

    verifier = TokenVerifier(token.service, token.issuer)
    try:
        if token.rootcertbundle:
            verifier.roots = load_bundle(token.rootcertbundle)
        if token.jwks:
            verifier.keys.update(load_jwks(token.jwks))
    except (OSError, ValueError) as exc:
        raise AuthSetupError(f"auth.token: cannot load the trusted keys: {exc}") from None
    token_service = None
    if token.builtin is not None:
        assert htpasswd is not None  # the schema requires htpasswd with builtin
        key_path = token.builtin.key or str(Path(data_dir) / "token-key.pem")
        try:
            signer = TokenSigner(key_path, token.issuer, token.service)
        except (OSError, ValueError) as exc:
            raise AuthSetupError(f"auth.token.builtin.key {key_path}: {exc}") from None
        verifier.keys[signer.kid] = signer.public_key
    guard = Guard("token", token.realm, rules, htpasswd=htpasswd, verifier=verifier, service=token.service)
    if token.builtin is not None:
        token_service = TokenService(signer, htpasswd, rules, guard)  # type: ignore[arg-type]
    return guard, token_service
