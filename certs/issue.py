"""A CA and the webhook's serving certificate, issued with `cryptography`.

Keys are ECDSA P-256. The serving certificate names the Service in every form the
API server may dial (`NAME`, `NAME.NS`, `NAME.NS.svc`, `NAME.NS.svc.cluster.local`)
as subjectAltNames: since Kubernetes 1.19 the CommonName alone is not accepted.
An existing CA is reused so the caBundle in the webhook configurations stays
stable; the serving pair is re-issued only when it is missing, invalid, does not
match the requested names, expires within the renewal window, or when forced.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
TLS_CERT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"
CA_VALIDITY: Final = dt.timedelta(days=3650)
SERVING_VALIDITY: Final = dt.timedelta(days=365)
RENEW_BEFORE: Final = dt.timedelta(days=30)
# Tolerates API servers whose clocks run a little behind ours.
BACKDATE: Final = dt.timedelta(minutes=5)

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class CertificateRequest:
    """Who the serving certificate is for."""

    service: str
    namespace: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()

    def all_dns_names(self) -> list[str]:
        """The Service's DNS names, then the extras, without repeats."""
        base = [
            self.service,
            f"{self.service}.{self.namespace}",
            f"{self.service}.{self.namespace}.svc",
            f"{self.service}.{self.namespace}.svc.cluster.local",
        ]
        return list(dict.fromkeys([*base, *self.dns_names]))

    def all_ips(self) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """The extra IP SANs, parsed; ValueError names a bad one."""
        result = []
        for text in self.ip_addresses:
            try:
                result.append(ipaddress.ip_address(text))
            except ValueError:
                raise ValueError(f'--ip "{text}" is not an IP address') from None
        return result


@dataclass(frozen=True)
class CertificateResult:
    """What `ensure_certificates` did."""

    issued: bool
    ca_created: bool
    not_after: dt.datetime
    reason: str


def ensure_certificates(
    out: Path,
    request: CertificateRequest,
    *,
    force: bool = False,
    renew_before: dt.timedelta = RENEW_BEFORE,
    clock: Clock = utc_now,
) -> CertificateResult:
    """Make sure `out` holds a CA and a valid serving pair for `request`; issue what is missing."""
    out.mkdir(parents=True, exist_ok=True)
    now = clock()
    ca_key, ca_cert, ca_created = _load_or_create_ca(out, now)
    reason = "forced" if force else _reissue_reason(out, request, ca_cert, now, renew_before)
    if reason is None:
        current = x509.load_pem_x509_certificate((out / TLS_CERT).read_bytes())
        return CertificateResult(False, ca_created, current.not_valid_after_utc, "still valid")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _serving_certificate(request, key, ca_key, ca_cert, now)
    _write_private(out / TLS_KEY, _key_pem(key))
    _write_public(out / TLS_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return CertificateResult(True, ca_created, cert.not_valid_after_utc, reason)


def _load_or_create_ca(
    out: Path, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, bool]:
    try:
        cert = x509.load_pem_x509_certificate((out / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((out / CA_KEY).read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc > now + RENEW_BEFORE:
            return key, cert, False
    except (OSError, ValueError):
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "multihome webhook CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(out / CA_KEY, _key_pem(key))
    _write_public(out / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, True


def _reissue_reason(
    out: Path,
    request: CertificateRequest,
    ca_cert: x509.Certificate,
    now: dt.datetime,
    renew_before: dt.timedelta,
) -> str | None:
    try:
        cert = x509.load_pem_x509_certificate((out / TLS_CERT).read_bytes())
        key = serialization.load_pem_private_key((out / TLS_KEY).read_bytes(), password=None)
    except (OSError, ValueError):
        return "no valid serving pair"
    if cert.public_key() != key.public_key():
        return "certificate and key do not match"
    if cert.issuer != ca_cert.subject:
        return "not issued by the current CA"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return "not signed by the current CA"
    if cert.not_valid_after_utc - renew_before <= now:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}, within the renewal window"
    if set(subject_alt_names(cert)) != set(_wanted_names(request)):
        return "names changed"
    return None


def _wanted_names(request: CertificateRequest) -> list[str]:
    return [*request.all_dns_names(), *(str(ip) for ip in request.all_ips())]


def subject_alt_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        *san.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    ]


def _serving_certificate(
    request: CertificateRequest,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: dt.datetime,
) -> x509.Certificate:
    dns = request.all_dns_names()
    sans: Sequence[x509.GeneralName] = [
        *(x509.DNSName(name) for name in dns),
        *(x509.IPAddress(ip) for ip in request.all_ips()),
    ]
    not_after = min(now + SERVING_VALIDITY, ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[2])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    _write_atomically(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _write_atomically(path, data, 0o644)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # Written beside the target and renamed over it: a reader sees the old file or the new one.
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    temporary.replace(path)
