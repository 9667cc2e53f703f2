"""TLS: the server's context from `http.tls`, and self-signed certificates for a quick setup."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def server_context(tls: dict[str, Any]) -> ssl.SSLContext | None:
    """`certificate` and `key`; `clientcas` (a list of CA files) turns on mutual TLS."""
    if not tls or not tls.get("certificate"):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls["certificate"]), str(tls["key"]))
    client_cas = tls.get("clientcas") or []
    if isinstance(client_cas, str):
        client_cas = [client_cas]
    for ca in client_cas:
        context.load_verify_locations(cafile=str(ca))
    if client_cas:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


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
