"""ImageSourcePolicy against hostile payload sources: paths, file://, base64 and URLs.

Every refusal is exercised for real: files, symlinks and FIFOs in temporary folders, and
HTTP(S) servers on loopback in threads (so URL tests that must reach them set
``allow_private`` or ``allowed_networks``; the refusal tests run without them).
"""

from __future__ import annotations

import base64
import datetime
import http.server
import io
import os
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from qdrant_xai import ImageLimits, ImageLoadError, LoadedImage, SourceNotAllowedError
from qdrant_xai.images.policy import ImageSourcePolicy

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file types and symlinks")


def png_bytes(width: int = 24, height: int = 16, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


PNG = png_bytes()


def in_thread(call: Callable[[], Any], seconds: float = 5.0) -> BaseException | Any:
    """Runs ``call`` in a thread and fails the test if it is still running after ``seconds``."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return outcome[0]


# -- local files -------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "img.png").write_bytes(PNG)
    (root / "sub" / "deep.png").write_bytes(png_bytes(seed=1))
    (root / "a b.png").write_bytes(PNG)
    (outside / "secret.png").write_bytes(png_bytes(seed=2))
    return {"root": root, "outside": outside}


@pytest.fixture
def local(tree: dict[str, Path]) -> ImageSourcePolicy:
    return ImageSourcePolicy.from_roots([tree["root"]])


def test_files_under_the_root_are_read(tree: dict[str, Path], local: ImageSourcePolicy) -> None:
    root = tree["root"]
    loaded = local.open(str(root / "img.png"))
    assert isinstance(loaded, LoadedImage)
    assert (loaded.width, loaded.height) == (24, 16)
    assert loaded.source == str(root / "img.png")
    assert local.open(str(root / "sub" / "deep.png")).width == 24
    assert local.open(root / "sub" / "deep.png").width == 24  # a Path works too
    assert local.resolve(str(root / "sub" / ".." / "img.png")) == root / "img.png"


def test_relative_paths_resolve_from_the_working_directory(
    tree: dict[str, Path], local: ImageSourcePolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree["root"])
    assert local.open("sub/deep.png").width == 24
    with pytest.raises(SourceNotAllowedError, match="outside the allowed image roots"):
        local.open("../outside/secret.png")


def test_dotdot_traversal_is_refused(tree: dict[str, Path], local: ImageSourcePolicy) -> None:
    sneaky = f"{tree['root']}/sub/../../outside/secret.png"
    with pytest.raises(SourceNotAllowedError, match="outside the allowed image roots") as err:
        local.open(sneaky)
    assert "image_roots" in str(err.value)  # says what to set
    with pytest.raises(SourceNotAllowedError):
        local.open(f"{tree['root']}/../../../../../../etc/passwd")


def test_absolute_paths_outside_the_roots_are_refused(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    for source in [str(tree["outside"] / "secret.png"), "/etc/passwd", "/"]:
        with pytest.raises(SourceNotAllowedError, match="outside the allowed image roots"):
            local.open(source)


def test_no_roots_means_no_local_reads(tree: dict[str, Path]) -> None:
    with pytest.raises(SourceNotAllowedError, match=r"image_roots=\[\.\.\.\]"):
        ImageSourcePolicy().open(str(tree["root"] / "img.png"))


@posix_only
def test_symlink_out_of_the_root_is_refused(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    root, outside = tree["root"], tree["outside"]
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    for source in [root / "escape.png", root / "escape_dir" / "secret.png"]:
        with pytest.raises(SourceNotAllowedError, match=str(outside / "secret.png")):
            local.open(str(source))


@posix_only
def test_symlink_within_the_root_is_followed(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    root = tree["root"]
    (root / "alias.png").symlink_to(root / "sub" / "deep.png")
    (root / "alias_dir").symlink_to(root / "sub", target_is_directory=True)
    expected = np.asarray(local.open(str(root / "sub" / "deep.png")).image)
    for source in [root / "alias.png", root / "alias_dir" / "deep.png"]:
        assert np.array_equal(np.asarray(local.open(str(source)).image), expected)


@posix_only
def test_a_symlink_swapped_in_after_the_check_is_not_followed(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    # The check resolved the path; between check and open an attacker swaps a component
    # for a symlink. The open walks the path below the root with O_NOFOLLOW and refuses.
    root, outside = tree["root"], tree["outside"]
    (root / "swapped").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SourceNotAllowedError, match="symlink"):
        local._read_local(root / "swapped" / "secret.png", "swapped/secret.png")
    (root / "swapped.png").symlink_to(outside / "secret.png")
    with pytest.raises(SourceNotAllowedError, match="symlink"):
        local._read_local(root / "swapped.png", "swapped.png")


def test_a_directory_named_like_an_image_is_refused(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    (tree["root"] / "folder.png").mkdir()
    with pytest.raises(SourceNotAllowedError, match="is a directory"):
        local.open(str(tree["root"] / "folder.png"))
    with pytest.raises(SourceNotAllowedError, match="is a directory"):
        local.open(str(tree["root"]))


@posix_only
def test_a_fifo_is_refused_without_blocking(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    fifo = tree["root"] / "pipe.png"
    os.mkfifo(fifo)
    outcome = in_thread(lambda: local.open(str(fifo)), seconds=5)
    assert isinstance(outcome, SourceNotAllowedError)
    assert "FIFO" in str(outcome)
    # also when the FIFO appears after the check (the open itself must not block)
    outcome = in_thread(lambda: local._read_local(fifo, "pipe.png"), seconds=5)
    assert isinstance(outcome, SourceNotAllowedError)


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_a_device_is_refused() -> None:
    policy = ImageSourcePolicy.from_roots(["/dev"])
    outcome = in_thread(lambda: policy.open("/dev/null"), seconds=5)
    assert isinstance(outcome, SourceNotAllowedError)
    assert "device" in str(outcome)


def test_missing_corrupt_and_large_files_are_load_errors(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    root = tree["root"]
    with pytest.raises(ImageLoadError, match="cannot read the file"):
        local.open(str(root / "missing.png"))
    (root / "text.png").write_text("not an image")
    with pytest.raises(ImageLoadError, match="not an image"):
        local.open(str(root / "text.png"))
    small = ImageSourcePolicy([root], max_bytes=100)
    with pytest.raises(ImageLoadError, match=r"over the 100-byte limit; .*max_bytes"):
        small.open(str(root / "img.png"))
    limited = ImageSourcePolicy([root], ImageLimits(max_bytes=50))
    assert limited.byte_limit == 50
    with pytest.raises(ImageLoadError, match="50-byte limit"):
        limited.open(str(root / "img.png"))


def test_nul_bytes_and_empty_sources_are_refused(local: ImageSourcePolicy) -> None:
    with pytest.raises(SourceNotAllowedError, match="NUL"):
        local.open("img\x00.png")
    with pytest.raises(SourceNotAllowedError, match="empty"):
        local.open("")


def test_file_urls_follow_the_same_rules(tree: dict[str, Path], local: ImageSourcePolicy) -> None:
    root = tree["root"]
    assert local.open(f"file://{root}/img.png").width == 24
    assert local.open(f"file://localhost{root}/img.png").width == 24
    assert local.open(f"FILE://{root}/a%20b.png").width == 24  # percent-decoded
    assert local.resolve(f"file://{root}/sub/deep.png") == root / "sub" / "deep.png"
    for source, message in [
        ("file:///etc/passwd", "outside the allowed image roots"),
        (f"file://{root}/%2e%2e/outside/secret.png", "outside the allowed image roots"),
        (f"file://{root}/../outside/secret.png", "outside the allowed image roots"),
        ("file://evil.example.org/share/img.png", "another machine"),
        (f"file://{root.parent.name}{root}/img.png", "another machine"),
        ("file:img.png", "absolute"),
        (f"file://{root}/img.png?x=1", "with \\? or #"),
        (f"file://user:pw@localhost{root}/img.png", "credentials"),
        (f"file://{root}/img%00.png", "NUL"),
    ]:
        with pytest.raises(SourceNotAllowedError, match=message):
            local.open(source)


def test_a_path_that_looks_like_a_url_can_be_read_as_a_path(
    tree: dict[str, Path], local: ImageSourcePolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree["root"])
    (tree["root"] / "odd:name.png").write_bytes(PNG)
    with pytest.raises(SourceNotAllowedError, match="scheme is not read"):
        local.open("odd:name.png")
    assert local.open("odd:name.png", kind="path").width == 24
    assert local.open("./odd:name.png").width == 24
    with pytest.raises(SourceNotAllowedError, match="not a URL"):
        local.open("img.png", kind="url")
    with pytest.raises(ValueError, match="kind must be"):
        local.open("img.png", kind="guess")  # type: ignore[arg-type]


def test_resolve_refuses_non_local_sources(local: ImageSourcePolicy) -> None:
    for source in ["https://example.org/a.png", "data:image/png;base64,AAAA"]:
        with pytest.raises(SourceNotAllowedError, match="not a local path"):
            local.resolve(source)


# -- base64 ------------------------------------------------------------------------------

B64 = base64.b64encode(PNG).decode("ascii")


def test_data_uris_and_raw_base64_are_decoded() -> None:
    policy = ImageSourcePolicy()  # no roots needed
    loaded = policy.open(f"data:image/png;base64,{B64}")
    assert (loaded.width, loaded.height) == (24, 16)
    assert B64 not in loaded.source  # the label does not carry the payload
    wrapped = "\n".join(B64[i : i + 76] for i in range(0, len(B64), 76))
    assert policy.open(f"DATA:Image/PNG;charset=x;BASE64,{wrapped}").width == 24
    assert policy.open(B64, kind="base64").width == 24
    urlsafe = base64.urlsafe_b64encode(PNG).decode("ascii").rstrip("=")
    assert policy.open(urlsafe, kind="base64").width == 24
    assert policy.open(f"data:image/png;base64,{B64}", kind="base64").width == 24
    assert policy.open(f"data:image/png;base64,{B64}", kind="url").width == 24


def test_raw_base64_is_never_guessed(local: ImageSourcePolicy) -> None:
    with pytest.raises(SourceNotAllowedError, match="outside the allowed image roots"):
        local.open(B64[:100])


def test_too_large_base64_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = ImageSourcePolicy(max_bytes=1000)

    def no_decoding(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decoded although too large")

    monkeypatch.setattr(base64, "b64decode", no_decoding)
    huge = "A" * 20_000_000
    for source, kind in [(f"data:image/png;base64,{huge}", "auto"), (huge, "base64")]:
        started = time.monotonic()
        with pytest.raises(ImageLoadError, match="over the 1000-byte limit") as err:
            policy.open(source, kind=kind)  # type: ignore[arg-type]
        assert time.monotonic() - started < 1.0
        assert len(str(err.value)) < 300  # the payload is not echoed
        assert "max_bytes" in str(err.value)


def test_invalid_base64_and_non_images_are_load_errors() -> None:
    policy = ImageSourcePolicy()
    with pytest.raises(ImageLoadError, match="invalid base64"):
        policy.open("data:image/png;base64,!!!not*base64!!!")
    with pytest.raises(ImageLoadError, match="invalid base64"):
        policy.open("abcde", kind="base64")
    not_png = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode()
    with pytest.raises(ImageLoadError, match="not an image"):
        policy.open(f"data:image/png;base64,{not_png}")
    with pytest.raises(ImageLoadError, match="empty"):
        policy.open("data:image/png;base64,")


def test_data_uris_that_are_not_base64_images_are_refused() -> None:
    policy = ImageSourcePolicy()
    html = base64.b64encode(b"<script>alert(1)</script>").decode()
    for source, message in [
        (f"data:text/html;base64,{html}", "only data:image"),
        (f"data:;base64,{html}", "only data:image"),
        ("data:,hello", "only data:image"),
        ("data:image/png", "only data:image"),
        ("data:image/png,%89PNG%0D%0A", "only base64 data URIs"),
    ]:
        with pytest.raises(SourceNotAllowedError, match=message) as err:
            policy.open(source)
        assert "script" not in str(err.value)


def test_base64_can_be_switched_off() -> None:
    policy = ImageSourcePolicy(allow_base64=False)
    with pytest.raises(SourceNotAllowedError, match="allow_base64=True"):
        policy.open(f"data:image/png;base64,{B64}")
    with pytest.raises(SourceNotAllowedError, match="allow_base64=True"):
        policy.open(B64, kind="base64")


# -- URL policy, without any network -----------------------------------------------------


def test_urls_are_off_by_default(tree: dict[str, Path]) -> None:
    for policy in [ImageSourcePolicy(), ImageSourcePolicy.from_roots([tree["root"]])]:
        with pytest.raises(SourceNotAllowedError, match=r"allow_urls=True and allowed_hosts"):
            policy.open("https://images.example.org/cat.png")


def test_schemes_outside_url_schemes_are_refused() -> None:
    policy = ImageSourcePolicy(allow_urls=True, allowed_hosts=["*"])
    with pytest.raises(SourceNotAllowedError, match="add it to url_schemes"):
        policy.open("http://images.example.org/cat.png")
    for source in [
        "ftp://images.example.org/cat.png",
        "javascript:alert(document.cookie)",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "jar:file:///x.zip!/a.png",
    ]:
        with pytest.raises(SourceNotAllowedError, match="scheme is not read"):
            policy.open(source)
    with pytest.raises(ValueError, match="url_schemes"):
        ImageSourcePolicy(allow_urls=True, url_schemes=["ftp"])


def test_hosts_outside_the_allow_list_are_refused() -> None:
    policy = ImageSourcePolicy(allow_urls=True, allowed_hosts=["images.example.org"])
    for source in [
        "https://evil.example.com/cat.png",
        "https://example.org/cat.png",
        "https://images.example.org.evil.com/cat.png",
        "https://sub.images.example.org/cat.png",
    ]:
        with pytest.raises(SourceNotAllowedError, match="is not in allowed_hosts") as err:
            policy.open(source)
        assert "add it" in str(err.value)
    empty = ImageSourcePolicy(allow_urls=True)
    with pytest.raises(SourceNotAllowedError, match="is not in allowed_hosts"):
        empty.open("https://images.example.org/cat.png")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("a.example.org", True),
        ("a.b.example.org", True),
        ("A.Example.ORG.", True),
        ("example.org", False),
        ("evilexample.org", False),
        ("example.org.evil.com", False),
        ("aexample.org", False),
        ("cdn.other.net", True),
        ("x.cdn.other.net", False),
        ("203.0.113.9", True),
        ("[2001:db8::1]", True),
        ("2001:DB8:0::1", True),
        ("203.0.113.10", False),
        ("bad host", False),
    ],
)
def test_wildcard_and_exact_host_matching(host: str, allowed: bool) -> None:
    policy = ImageSourcePolicy(
        allow_urls=True,
        allowed_hosts=["*.example.org", "CDN.other.net.", "203.0.113.9", "[2001:db8::1]"],
    )
    assert policy.allows_host(host) is allowed


def test_invalid_allowed_hosts_entries_are_rejected() -> None:
    for entry in ["https://example.org", "example.org:8080", "a*.example.org", "*example.org"]:
        with pytest.raises(ValueError, match="allowed_hosts entry"):
            ImageSourcePolicy(allow_urls=True, allowed_hosts=[entry])
    assert ImageSourcePolicy(allow_urls=True, allowed_hosts=["*"]).allows_host("any.where")


PRIVATE_URLS = [
    "http://127.0.0.1/img.png",
    "http://127.1/img.png",
    "http://2130706433/img.png",
    "http://localhost/img.png",
    "http://[::1]/img.png",
    "http://[::]/img.png",
    "http://0.0.0.0/img.png",
    "http://10.0.0.1/img.png",
    "http://172.16.5.4/img.png",
    "http://192.168.1.1/img.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/img.png",
    "http://224.0.0.1/img.png",
    "http://[fd00::1]/img.png",
    "http://[fe80::1]/img.png",
    "http://[::ffff:127.0.0.1]/img.png",
    "http://[::ffff:169.254.169.254]/img.png",
    "http://[::ffff:10.0.0.1]/img.png",
    "http://[2002:7f00:1::]/img.png",
    "http://[64:ff9b::a9fe:a9fe]/img.png",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_internal_addresses_are_refused(url: str) -> None:
    policy = ImageSourcePolicy(allow_urls=True, url_schemes=["http", "https"], allowed_hosts=["*"])
    started = time.monotonic()
    with pytest.raises(SourceNotAllowedError, match="allow_private=True") as err:
        policy.open(url)
    assert "allowed_networks" in str(err.value)
    assert time.monotonic() - started < 2.0


def test_a_name_resolving_to_an_internal_address_is_refused() -> None:
    calls: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return {
            "metadata.example.org": ["169.254.169.254"],
            "mixed.example.org": ["93.184.215.14", "10.1.2.3"],
        }[host]

    policy = ImageSourcePolicy(allow_urls=True, allowed_hosts=["*.example.org"], resolver=resolver)
    with pytest.raises(
        SourceNotAllowedError,
        match=r"resolves to 169\.254\.169\.254, an internal address \(link-local\)",
    ):
        policy.open("https://metadata.example.org/latest")
    # one bad address among good ones is enough to refuse
    with pytest.raises(
        SourceNotAllowedError, match=r"10\.1\.2\.3, an internal address \(private\)"
    ):
        policy.open("https://mixed.example.org:8443/a.png")
    assert calls == [("metadata.example.org", 443), ("mixed.example.org", 8443)]


def test_a_slow_resolver_times_out() -> None:
    release = threading.Event()

    def slow(host: str, port: int) -> list[str]:
        release.wait(10)
        return ["93.184.215.14"]

    policy = ImageSourcePolicy(
        allow_urls=True, allowed_hosts=["*"], resolver=slow, connect_timeout=0.3
    )
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match="connect_timeout"):
        policy.open("https://images.example.org/a.png")
    assert time.monotonic() - started < 2.0
    release.set()


def test_credentials_never_reach_messages() -> None:
    policy = ImageSourcePolicy(allow_urls=True, allowed_hosts=["images.example.org"])
    for source in [
        "https://alice:s3cr3t-pw@images.example.org/a.png?X-Amz-Signature=TOPSECRET",
        "https://alice:s3cr3t-pw@evil.example.com/a.png?X-Amz-Signature=TOPSECRET",
        "http://alice:s3cr3t-pw@images.example.org/a.png?X-Amz-Signature=TOPSECRET",
        "ftp://alice:s3cr3t-pw@images.example.org/a.png?X-Amz-Signature=TOPSECRET",
    ]:
        with pytest.raises(SourceNotAllowedError) as err:
            policy.open(source)
        assert "s3cr3t" not in str(err.value)
        assert "TOPSECRET" not in str(err.value)
        assert "alice" not in str(err.value)
    with pytest.raises(SourceNotAllowedError, match="credentials"):
        policy.open("https://alice:s3cr3t-pw@images.example.org/a.png")


# -- URLs against real servers on loopback -----------------------------------------------


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


# -- settings ----------------------------------------------------------------------------


def test_settings_from_strings(tmp_path: Path) -> None:
    other = tmp_path / "other"
    policy = ImageSourcePolicy.from_settings(
        {
            "roots": f"{tmp_path}{os.pathsep}{other}",
            "allow_urls": "yes",
            "allowed_hosts": "images.example.org, *.cdn.example.org",
            "url_schemes": "https,http",
            "allow_private": "false",
            "allowed_networks": "10.1.0.0/16",
            "max_bytes": "5000000",
            "timeout": "7.5",
            "max_redirects": None,
        },
        read_timeout=2,
    )
    assert policy.roots == (tmp_path.resolve(), other.resolve())
    assert policy.allowed_hosts == ("images.example.org", "*.cdn.example.org")
    assert policy.url_schemes == ("https", "http")
    assert policy.allow_urls and not policy.allow_private
    assert (policy.byte_limit, policy.timeout, policy.read_timeout) == (5_000_000, 7.5, 2.0)
    assert policy.max_redirects == 3
    assert policy == ImageSourcePolicy(
        [tmp_path, other],
        allow_urls=True,
        allowed_hosts=["images.example.org", "*.cdn.example.org"],
        url_schemes=["https", "http"],
        allowed_networks=["10.1.0.0/16"],
        max_bytes=5_000_000,
        timeout=7.5,
        read_timeout=2,
    )
    with pytest.raises(ValueError, match="unknown image source settings"):
        ImageSourcePolicy.from_settings({"allow_url": True})
    with pytest.raises(ValueError, match="allow_urls must be true or false"):
        ImageSourcePolicy.from_settings(allow_urls="maybe")
    with pytest.raises(ValueError, match="timeout must be a positive"):
        ImageSourcePolicy.from_settings(timeout="0")
    with pytest.raises(ValueError, match="allowed_networks entry"):
        ImageSourcePolicy(allowed_networks=["not-a-network"])


def test_describe_is_one_line(tmp_path: Path) -> None:
    assert ImageSourcePolicy().describe() == (
        "image sources: no files; base64 images; no URLs; at most 104857600 bytes each"
    )
    line = ImageSourcePolicy(
        [tmp_path],
        allow_urls=True,
        allowed_hosts=["*.example.org"],
        max_bytes=1000,
        timeout=3,
    ).describe()
    assert "\n" not in line
    assert str(tmp_path.resolve()) in line
    assert "https URLs from *.example.org (public addresses only, 3 s" in line
    assert "at most 1000 bytes" in line


def test_from_roots_keeps_its_behaviour(tree: dict[str, Path]) -> None:
    limits = ImageLimits(max_pixels=100)
    policy = ImageSourcePolicy.from_roots([str(tree["root"])], limits=limits)
    assert policy.roots == (tree["root"].resolve(),)
    assert policy.limits is limits
    assert not policy.allow_urls
    with pytest.raises(ImageLoadError, match="exceeds the limit of 100"):
        policy.open(str(tree["root"] / "img.png"))  # the policy's limits reach the decoder
