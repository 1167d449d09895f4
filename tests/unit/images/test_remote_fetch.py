"""URL image sources fetched from real HTTP(S) servers on loopback, in threads.

The servers are on 127.0.0.1, so the tests that must reach them set ``allow_private`` or
``allowed_networks``; redirects, size caps, stalls, trickles and TLS name checks are
exercised for real.
"""

from __future__ import annotations

import datetime
import http.server
import io
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from qdrant_xai import ImageLoadError, SourceNotAllowedError
from qdrant_xai.images.policy import ImageSourcePolicy
from tests.unit.images._sources import PNG


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        try:
            self._route()
        except OSError:  # the client hung up on purpose (limits, timeouts)
            self.close_connection = True

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        self.server.seen.append((url.path, self.headers.get("Host", "")))
        stop = self.server.stop
        if url.path == "/img.png":
            self._send(200, PNG, Content_Type="image/png")
        elif url.path == "/untyped":
            self._send(200, PNG)
        elif url.path == "/page.html":
            self._send(200, b"<html>hi</html>", Content_Type="text/html; charset=utf-8")
        elif url.path == "/garbage.png":
            self._send(200, b"GIF89a but not really an image", Content_Type="image/png")
        elif url.path == "/gzip.png":
            self._send(200, PNG, Content_Type="image/png", Content_Encoding="gzip")
        elif url.path == "/redirect":
            self._send(int(query.get("status", ["302"])[0]), Location=query["to"][0])
        elif url.path.startswith("/loop/"):
            hop = int(url.path.rsplit("/", 1)[1])
            self._send(302, Location=f"/loop/{hop + 1}")
        elif url.path == "/huge-length":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            self.wfile.write(PNG)
            self.close_connection = True
        elif url.path == "/endless":  # chunked, no length, more than any limit
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"\0" * 65536
            for _ in range(4096):  # 256 MB, unless the client stops first
                if stop.is_set():
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.server.sent += len(chunk)
            self.close_connection = True
        elif url.path == "/stall":  # accepts, then never answers
            stop.wait(30)
            self.close_connection = True
        elif url.path == "/drip":  # answers, then one byte every 0.1 s
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for byte in PNG:
                if stop.wait(0.1):
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            self.close_connection = True
        else:
            self._send(404, b"no such image", Content_Type="text/plain")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str]] = []
        self.sent = 0
        self.stop = threading.Event()
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-response are part of the tests

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def _serve(context: ssl.SSLContext | None = None) -> Iterator[_Server]:
    server = _Server(context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[_Server]:
    yield from _serve()


@pytest.fixture
def base(server: _Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def web(**options: Any) -> ImageSourcePolicy:
    """A policy that may reach the loopback test server."""
    settings: dict[str, Any] = {
        "allow_urls": True,
        "url_schemes": ["http"],
        "allowed_hosts": ["127.0.0.1"],
        "allowed_networks": ["127.0.0.0/8"],
        "timeout": 5,
        "read_timeout": 2,
        **options,
    }
    return ImageSourcePolicy(**settings)


def test_a_served_image_is_fetched_and_decoded(base: str, server: _Server) -> None:
    loaded = web().open(f"{base}/img.png")
    assert (loaded.width, loaded.height) == (24, 16)
    assert loaded.source == f"{base}/img.png"
    assert np.array_equal(np.asarray(loaded.image), np.asarray(Image.open(io.BytesIO(PNG))))
    assert web(allow_private=True, allowed_networks=[]).open(f"{base}/untyped").width == 24
    assert server.seen[0] == ("/img.png", f"127.0.0.1:{server.port}")


def test_the_loopback_server_is_refused_without_allow_private(base: str, server: _Server) -> None:
    with pytest.raises(SourceNotAllowedError, match="loopback"):
        web(allowed_networks=[]).open(f"{base}/img.png")
    with pytest.raises(SourceNotAllowedError, match="loopback"):
        web(allowed_networks=["10.0.0.0/8"]).open(f"{base}/img.png")
    assert server.seen == []  # refused before connecting


def test_the_checked_address_is_the_one_connected_to(server: _Server) -> None:
    # The name exists only in this resolver: the fetch can only succeed by connecting to
    # the address that was checked, with the original host in the Host header. A second
    # lookup (DNS rebinding) would get a metadata address.
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    policy = web(allowed_hosts=["*.example.org"], resolver=resolver)
    loaded = policy.open(f"http://images.example.org:{server.port}/img.png")
    assert loaded.width == 24
    assert calls == ["images.example.org"]
    assert server.seen == [("/img.png", f"images.example.org:{server.port}")]


def test_http_errors_and_non_images_are_load_errors(base: str) -> None:
    policy = web()
    with pytest.raises(ImageLoadError, match="HTTP 404"):
        policy.open(f"{base}/nothing.png?token=TOPSECRET")
    try:
        policy.open(f"{base}/nothing.png?token=TOPSECRET")
    except ImageLoadError as exc:
        assert "TOPSECRET" not in str(exc)
    with pytest.raises(ImageLoadError, match="text/html, not an image"):
        policy.open(f"{base}/page.html")
    with pytest.raises(ImageLoadError, match="not an image"):
        policy.open(f"{base}/garbage.png")
    with pytest.raises(ImageLoadError, match="gzip-encoded"):
        policy.open(f"{base}/gzip.png")


def test_a_closed_port_is_a_load_error() -> None:
    probe = _Server()
    port = probe.port
    probe.server_close()
    with pytest.raises(ImageLoadError, match="fetch failed"):
        web().open(f"http://127.0.0.1:{port}/img.png")


def test_redirects_are_followed_only_within_the_policy(base: str, server: _Server) -> None:
    policy = web()
    loaded = policy.open(f"{base}/redirect?to=/img.png")
    assert loaded.width == 24
    assert policy.open(f"{base}/redirect?status=308&to={base}/img.png").width == 24
    assert [path for path, _ in server.seen] == ["/redirect", "/img.png"] * 2

    def redirect(to: str) -> str:
        return f"{base}/redirect?to={urllib.parse.quote(to, safe='')}"

    for target, error, message in [
        ("http://evil.example.com/x.png", SourceNotAllowedError, "not in allowed_hosts"),
        ("//evil.example.com/x.png", SourceNotAllowedError, "not in allowed_hosts"),
        ("file:///etc/passwd", SourceNotAllowedError, "scheme is not allowed"),
        ("gopher://127.0.0.1/x", SourceNotAllowedError, "scheme is not allowed"),
        ("https://127.0.0.1/img.png", SourceNotAllowedError, "add it to url_schemes"),
        ("http://u:s3cr3t@127.0.0.1/img.png", SourceNotAllowedError, "credentials"),
    ]:
        with pytest.raises(error, match=message) as err:
            policy.open(redirect(target))
        assert "s3cr3t" not in str(err.value)


def test_redirects_to_internal_addresses_are_refused(base: str, server: _Server) -> None:
    def resolver(host: str, port: int) -> list[str]:
        return {"internal.example.org": ["10.20.30.40"]}[host]

    policy = web(
        allowed_hosts=["127.0.0.1", "169.254.169.254", "[::1]", "*.example.org"],
        allowed_networks=["127.0.0.1/32"],
        resolver=resolver,
    )
    for target, message in [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://internal.example.org/a.png", r"10\.20\.30\.40, an internal address \(private\)"),
        (f"http://[::1]:{server.port}/img.png", "loopback"),
    ]:
        with pytest.raises(SourceNotAllowedError, match=message):
            policy.open(f"{base}/redirect?to={urllib.parse.quote(target, safe='')}")
    assert all(path == "/redirect" for path, _ in server.seen)


def test_too_many_redirects(base: str, server: _Server) -> None:
    with pytest.raises(ImageLoadError, match="more than 2 redirects; raise max_redirects"):
        web(max_redirects=2).open(f"{base}/loop/0")
    assert [path for path, _ in server.seen] == ["/loop/0", "/loop/1", "/loop/2"]
    with pytest.raises(ImageLoadError, match="more than 0 redirects"):
        web(max_redirects=0).open(f"{base}/redirect?to=/img.png")


def test_a_large_content_length_is_refused_before_reading(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match=r"Content-Length 1000000000000 .*raise max_bytes"):
        web().open(f"{base}/huge-length")
    assert time.monotonic() - started < 2.0


def test_a_body_without_length_is_cut_off_at_max_bytes(base: str, server: _Server) -> None:
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match="exceeds the 200000-byte limit"):
        web(max_bytes=200_000).open(f"{base}/endless")
    assert time.monotonic() - started < 3.0
    time.sleep(0.2)
    assert server.sent < 50_000_000  # the download stopped, far from the 256 MB on offer


def test_a_stalled_server_times_out(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match=r"did not answer in time.*read_timeout=0\.5") as err:
        web(read_timeout=0.5).open(f"{base}/stall")
    assert time.monotonic() - started < 2.5
    assert "raise them" in str(err.value)


def test_a_trickling_server_hits_the_total_deadline(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match=r"timeout=0\.8"):
        web(timeout=0.8, read_timeout=0.5).open(f"{base}/drip")
    # the deadline is checked between reads: at most one read timeout late (plus slack for a
    # loaded machine: it failed once at +0.7 s with five test runs sharing two cores)
    assert time.monotonic() - started < 0.8 + 0.5 + 1.5


# -- https: the certificate is checked for the host name, not for the pinned address --------


def _certificates(tmp_path: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A CA file and a server certificate and key for ``names``."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qdrant-xai test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[_Server, Path]]:
    ca_file, cert_file, key_file = _certificates(tmp_path, ["images.example.org"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    for server in _serve(context):
        yield server, ca_file


def _pinned(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def test_https_is_verified_against_the_host_name(tls: tuple[_Server, Path], base: str) -> None:
    server, ca_file = tls
    policy = web(
        url_schemes=["https", "http"],
        allowed_hosts=["*.example.org", "127.0.0.1"],
        resolver=_pinned,
        ca_bundle=ca_file,
    )
    loaded = policy.open(f"https://images.example.org:{server.port}/img.png")
    assert loaded.width == 24
    assert server.seen == [("/img.png", f"images.example.org:{server.port}")]
    # a name the certificate does not cover fails verification
    with pytest.raises(ImageLoadError, match=r"does not cover other\.example\.org"):
        policy.open(f"https://other.example.org:{server.port}/img.png")
    # without the CA, the default bundle does not trust the server
    with pytest.raises(ImageLoadError, match=r"CERTIFICATE_VERIFY_FAILED.*ca_bundle"):
        web(url_schemes=["https"], allowed_hosts=["*.example.org"], resolver=_pinned).open(
            f"https://images.example.org:{server.port}/img.png"
        )
    # an https page may not send the client to plain http
    downgrade = f"{base}/img.png"
    with pytest.raises(SourceNotAllowedError, match="from https to http"):
        policy.open(
            f"https://images.example.org:{server.port}/redirect?to="
            + urllib.parse.quote(downgrade, safe="")
        )
