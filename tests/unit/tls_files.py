"""Test certificates, keys and CA files made with `cryptography` (no openssl, no fixtures)."""

import datetime
import ipaddress
from pathlib import Path
from typing import Dict, Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def certificate(private_key, sans: Iterable[str], days: int = 30, ca: bool = False,
                not_after: Optional[datetime.datetime] = None) -> x509.Certificate:
    """A self-signed certificate; `sans` like DNS:llm.example.com or IP:10.0.0.5."""
    names = []
    for san in sans:
        kind, value = san.split(":", 1)
        names.append(x509.DNSName(value) if kind == "DNS"
                     else x509.IPAddress(ipaddress.ip_address(value)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(subject)
               .public_key(private_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - datetime.timedelta(days=2 * days + 1))
               .not_valid_after(not_after or NOW + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(private_key, hashes.SHA256())


def write_pem(path: Path, obj, password: Optional[bytes] = None) -> str:
    if isinstance(obj, x509.Certificate):
        data = obj.public_bytes(serialization.Encoding.PEM)
    else:
        encryption = (serialization.BestAvailableEncryption(password) if password
                      else serialization.NoEncryption())
        data = obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 encryption)
    path.write_bytes(data)
    return str(path)


def tls_set(folder: Path, server_name: str = "llm.example.com") -> Dict[str, str]:
    """Files for every TLS case: a matching pair for server_name, a key of another pair, a
    certificate for another name, a CA in PEM and the same CA in DER (not PEM)."""
    folder.mkdir(parents=True, exist_ok=True)
    server_key, other_key, ca_key = key(), key(), key()
    ca = certificate(ca_key, [], ca=True)
    out = {
        "cert": write_pem(folder / "server.pem", certificate(server_key, ["DNS:" + server_name])),
        "key": write_pem(folder / "server.key", server_key),
        "other_key": write_pem(folder / "other.key", other_key),
        "wrong_name_cert": write_pem(folder / "wrong-name.pem",
                                     certificate(server_key, ["DNS:other.example.org"])),
        "ca": write_pem(folder / "ca.pem", ca),
        "ca_der": str(folder / "ca.der"),
    }
    (folder / "ca.der").write_bytes(ca.public_bytes(serialization.Encoding.DER))
    return out
