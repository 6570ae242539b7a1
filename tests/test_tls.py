"""HTTPS with --tls-cert/--tls-key, using a self-signed certificate made for the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.mjpeg import collect, open_mjpeg
from support.server import camcast_command, clean_env
from support.waiting import eventually

HTTPS_LINE = re.compile(r"camcast: serving .* at (https://127\.0\.0\.1:(\d+)/)")


def write_self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, valid for a day, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "camcast test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def cert_and_key(tmp_path: Path) -> tuple[Path, Path]:
    return write_self_signed(tmp_path)


async def test_serves_https_with_a_self_signed_certificate(start_server, http, cert_and_key) -> None:
    cert, key = cert_and_key
    server = start_server("--tls-cert", str(cert), "--tls-key", str(key), "--token", "tls-token",
                          wait=False)
    url = server.wait_for_url(line=HTTPS_LINE)
    trusted = ssl.create_default_context(cafile=str(cert))  # the test's own cert as the CA
    auth = {"Authorization": "Bearer tls-token"}

    async def health() -> int:
        async with http.get(url + "healthz", ssl=trusted) as response:
            return response.status

    # /healthz turns 200 once the first frame is through.
    await eventually(health, 20, "/healthz to answer 200", until=lambda status: status == 200)
    async with http.get(url + "api/status", ssl=trusted, headers=auth) as response:
        assert response.status == 200
        assert (await response.json())["source_up"] is True
    async with http.get(url + "snapshot.jpg", ssl=False, headers=auth) as response:
        assert response.status == 200
        assert (await response.read()).startswith(b"\xff\xd8")
    async with http.get(url, ssl=trusted) as response:
        assert response.status == 200 and "Content-Security-Policy" in response.headers
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted)) as tls_http, \
            open_mjpeg(tls_http, f"{url}video.mjpg?token=tls-token") as reader:
        assert len(await collect(reader, 10.0, limit=3)) == 3
    # Plain HTTP on the TLS port gets no answer, and an untrusted certificate is refused.
    with pytest.raises(aiohttp.ClientError):
        async with http.get(url.replace("https://", "http://") + "healthz") as response:
            await response.read()
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        async with http.get(url + "healthz", ssl=ssl.create_default_context()) as response:
            await response.read()


def run_camcast(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(camcast_command("--source", "testpattern", "--host", "127.0.0.1", "--port", "0",
                                          *args),
                          cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "not-pem", "mismatched", "cert-only"])
def test_unusable_certificate_files_stop_startup(tmp_path: Path, cert_and_key, case: str) -> None:
    cert, key = cert_and_key
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = write_self_signed(other)
    args = {
        "missing-cert": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)],
        "missing-key": ["--tls-cert", str(cert), "--tls-key", str(tmp_path / "nope.pem")],
        "not-pem": ["--tls-cert", str(junk), "--tls-key", str(key)],
        "mismatched": ["--tls-cert", str(cert), "--tls-key", str(other_key)],
        "cert-only": ["--tls-cert", str(cert)],
    }[case]
    result = run_camcast(*args, cwd=tmp_path)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("camcast: error: --tls-"), result.stderr
    assert "Traceback" not in result.stderr and "serving" not in result.stdout
