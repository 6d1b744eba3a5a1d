"""Certificates: issued, reused, renewed, and accepted by a real TLS client."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.issue import CertificateRequest, ensure_certificates, subject_alt_names, utc_now

REQUEST = CertificateRequest("multihome", "platform", ("webhook.example.com",), ("127.0.0.1",))


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_issues_a_ca_and_a_serving_pair(tmp_path: Path) -> None:
    result = ensure_certificates(tmp_path, REQUEST)
    assert result.issued and result.ca_created
    cert, ca = _cert(tmp_path / "tls.crt"), _cert(tmp_path / "ca.crt")
    assert subject_alt_names(cert) == [
        "multihome",
        "multihome.platform",
        "multihome.platform.svc",
        "multihome.platform.svc.cluster.local",
        "webhook.example.com",
        "127.0.0.1",
    ]
    cert.verify_directly_issued_by(ca)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in ("tls.key", "ca.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600


def test_a_valid_pair_is_kept(tmp_path: Path) -> None:
    ensure_certificates(tmp_path, REQUEST)
    before = (tmp_path / "tls.crt").read_bytes()
    result = ensure_certificates(tmp_path, REQUEST)
    assert not result.issued
    assert (tmp_path / "tls.crt").read_bytes() == before


def test_the_ca_is_reused_when_the_pair_is_renewed(tmp_path: Path) -> None:
    ensure_certificates(tmp_path, REQUEST)
    ca_before = (tmp_path / "ca.crt").read_bytes()
    later = utc_now() + dt.timedelta(days=340)
    result = ensure_certificates(tmp_path, REQUEST, clock=lambda: later)
    assert result.issued and not result.ca_created
    assert "renewal window" in result.reason
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    _cert(tmp_path / "tls.crt").verify_directly_issued_by(_cert(tmp_path / "ca.crt"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: (d / "tls.key").write_text("garbage"), "no valid serving pair"),
        (lambda d: (d / "tls.crt").unlink(), "no valid serving pair"),
    ],
)
def test_a_broken_pair_is_reissued(tmp_path: Path, change: object, reason: str) -> None:
    ensure_certificates(tmp_path, REQUEST)
    change(tmp_path)  # type: ignore[operator]
    result = ensure_certificates(tmp_path, REQUEST)
    assert result.issued and result.reason == reason


def test_new_names_or_force_reissue(tmp_path: Path) -> None:
    ensure_certificates(tmp_path, REQUEST)
    assert ensure_certificates(tmp_path, CertificateRequest("multihome", "other")).reason == "names changed"
    assert (
        ensure_certificates(tmp_path, CertificateRequest("multihome", "other"), force=True).reason == "forced"
    )


def test_a_pair_from_another_ca_is_reissued(tmp_path: Path) -> None:
    ensure_certificates(tmp_path, REQUEST)
    other = tmp_path / "other"
    ensure_certificates(other, REQUEST)
    (tmp_path / "tls.crt").write_bytes((other / "tls.crt").read_bytes())
    (tmp_path / "tls.key").write_bytes((other / "tls.key").read_bytes())
    assert ensure_certificates(tmp_path, REQUEST).reason == "not signed by the current CA"


def test_a_bad_ip_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='--ip "localhost" is not an IP address'):
        ensure_certificates(tmp_path, CertificateRequest("a", "b", (), ("localhost",)))
