"""TLS: the server's context from `http.tls`, and self-signed certificates for a quick setup."""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import schema


class TlsSetupError(Exception):
    """A TLS file that cannot be used; the message names it and the key that points at it."""


def server_context(tls: schema.Tls) -> ssl.SSLContext | None:
    """`certificate` and `key`; `clientcas` (CA files) turns on mutual TLS."""
    if not tls.certificate or not tls.key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.minimumtls == "tls1.3" else ssl.TLSVersion.TLSv1_2
    for key, path in (("certificate", tls.certificate), ("key", tls.key)):
        if not Path(path).is_file():
            raise TlsSetupError(f"http.tls.{key}: no such file {path}")
    try:
        context.load_cert_chain(tls.certificate, tls.key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(f"http.tls: cannot use certificate {tls.certificate} with key {tls.key}: "
                            f"{getattr(exc, 'reason', None) or exc}") from None
    for ca in tls.clientcas:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise TlsSetupError(f"http.tls.clientcas: cannot load {ca}: {getattr(exc, 'strerror', None) or exc}") from None
    if tls.clientcas:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_host(host: str) -> str:
    """A host name (RFC 1123, `*.` wildcard allowed) or an IP address; ValueError otherwise."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    name = host[2:] if host.startswith("*.") else host
    if len(name) > 253 or not name or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{host!r} is neither a host name nor an IP address")
    return host


def self_signed(hosts: list[str], days: int = 365) -> tuple[bytes, bytes]:
    """A certificate for hosts (names or IP addresses) and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def write_self_signed(hosts: list[str], certificate: Path, key: Path, days: int = 365) -> None:
    cert_pem, key_pem = self_signed(hosts, days)
    certificate.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    certificate.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
