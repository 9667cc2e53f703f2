"""Docker registry tokens (JWT): verified as a resource server, and signed by the built-in service.

An external token service is trusted through `rootcertbundle` (tokens carry an
`x5c` chain ending at one of its certificates, as Distribution expects) or a
JWKS file (tokens name their key with `kid`). The built-in service signs with
an ES256 key of its own, which the registry trusts the same way.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .access import Identity, Scope

ALGORITHMS = ["RS256", "ES256"]
#: clocks of the registry and the token service may differ this much
LEEWAY_SECONDS = 60
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
#: what checking one certificate against its issuer raises when it was not issued by it
CHAIN_ERRORS = (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm)


class TokenError(Exception):
    """A token that must not be honoured; the message says why (never the token itself)."""


def load_bundle(path: str | Path) -> list[x509.Certificate]:
    certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    if not certificates:
        raise ValueError(f"no certificates in {path}")
    return certificates


def load_jwks(path: str | Path) -> dict[str, PublicKey]:
    keys: dict[str, PublicKey] = {}
    for entry in json.loads(Path(path).read_text()).get("keys", []):
        key = jwt.PyJWK(entry).key
        keys[entry.get("kid", f"key-{len(keys)}")] = key
    return keys


def key_id(key: PublicKey) -> str:
    """A stable kid: the base64url sha256 of the key's DER form (not libtrust's format)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.sha256(der).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def libtrust_key_id(key: PublicKey) -> str:
    """The kid Distribution-era token services (libtrust) write, and Distribution matches against its
    rootcertbundle: the first 240 bits of the sha256 of the key's DER form, base32, in groups of four."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


@dataclass
class TokenVerifier:
    service: str
    issuer: str
    roots: list[x509.Certificate] = field(default_factory=list)
    keys: dict[str, PublicKey] = field(default_factory=dict)

    def _key_for(self, header: dict[str, Any]) -> PublicKey:
        chain = header.get("x5c")
        if chain:
            try:
                certificates = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in chain]
            except (TypeError, ValueError):  # not base64 (binascii.Error), not DER, not strings
                raise TokenError("token x5c header is not a chain of certificates") from None
            return self._verify_chain(certificates)
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenError("token names no key: neither an x5c chain nor a kid")
        if kid in self.keys:
            return self.keys[kid]
        by_kid = {kid_of(c.public_key()): c.public_key()  # type: ignore[misc]
                  for c in self.roots for kid_of in (key_id, libtrust_key_id)}
        if kid in by_kid:
            return by_kid[kid]
        raise TokenError("token signed by an unknown key")

    def _verify_chain(self, chain: list[x509.Certificate]) -> PublicKey:
        now = time.time()
        for certificate in chain:
            if not (certificate.not_valid_before_utc.timestamp() - LEEWAY_SECONDS <= now
                    <= certificate.not_valid_after_utc.timestamp() + LEEWAY_SECONDS):
                raise TokenError("token certificate chain is expired or not yet valid")
        for child, parent in itertools.pairwise(chain):
            try:
                child.verify_directly_issued_by(parent)
            except CHAIN_ERRORS as exc:
                raise TokenError(f"token certificate chain is broken: {type(exc).__name__}") from None
        last = chain[-1]
        for root in self.roots:
            if last == root:
                return chain[0].public_key()  # type: ignore[return-value]
            try:
                last.verify_directly_issued_by(root)
            except CHAIN_ERRORS:
                continue
            return chain[0].public_key()  # type: ignore[return-value]
        raise TokenError("token certificate chain does not lead to a trusted root")

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenError(f"token algorithm {header.get('alg')!r} not accepted")
        key = self._key_for(header)
        try:
            claims = jwt.decode(
                token, key, algorithms=ALGORITHMS, audience=self.service, issuer=self.issuer,
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token is for another service") from None
        except jwt.InvalidIssuerError:
            raise TokenError("token from another issuer") from None
        except (jwt.PyJWTError, TypeError, ValueError) as exc:  # TypeError: alg for another kind of key
            raise TokenError(f"invalid token: {type(exc).__name__}") from None
        if claims.get("typ") == "refresh":
            raise TokenError("a refresh token is not an access token")
        return Identity(_subject(claims) or None, _grants(claims.get("access")))


class TokenSigner:
    """The built-in token service's key: ES256, generated on first start and kept in a PEM file."""

    def __init__(self, key_path: str | Path, issuer: str, service: str) -> None:
        path = Path(key_path)
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path}: the token key must be an EC (P-256) key")
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            path.chmod(0o600)
        self._key = key
        self.public_key = key.public_key()
        self.kid = key_id(self.public_key)
        self.issuer = issuer
        self.service = service

    def sign(self, claims: dict[str, Any], expires_in: float) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": self.service, "iat": now, "nbf": now - 1,
                "exp": now + int(expires_in), "jti": secrets.token_hex(16), **claims}
        return jwt.encode(body, self._key, algorithm="ES256", headers={"kid": self.kid})

    def verify_refresh(self, token: str) -> str:
        """The user a refresh token was issued to."""
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"], audience=self.service,
                                issuer=self.issuer, leeway=LEEWAY_SECONDS)
        except jwt.PyJWTError:
            raise TokenError("invalid or expired refresh token") from None
        subject = _subject(claims)
        if claims.get("typ") != "refresh" or not subject:
            raise TokenError("not a refresh token")
        return subject


def _subject(claims: dict[str, Any]) -> str:
    subject = claims.get("sub")
    if subject is not None and not isinstance(subject, str):
        raise TokenError("token sub claim is not a string")
    return subject or ""


def _grants(access: Any) -> tuple[Scope, ...]:
    """The `access` claim: a list of {type, name, actions: [...]} with strings throughout, as Distribution
    reads it; a token whose claim has another shape is refused, not half understood."""
    if access is None:
        return ()
    if not isinstance(access, list):
        raise TokenError("token access claim is not a list")
    grants = []
    for entry in access:
        if not isinstance(entry, dict):
            raise TokenError("token access claim holds something other than an object")
        kind, name, actions = entry.get("type", ""), entry.get("name"), entry.get("actions") or []
        if not isinstance(kind, str) or not isinstance(name, str) or not isinstance(actions, list) \
                or not all(isinstance(action, str) for action in actions):
            raise TokenError("token access claim entry needs a string type and name, and a list of string actions")
        grants.append(Scope(kind, name, frozenset(actions)))
    return tuple(grants)
