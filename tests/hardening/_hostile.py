"""The hostile world of ``test_hostile_sources.py``: an audit hook, loopback HTTP servers and
the table of hostile image sources, each with the policy it meets and the outcome it must have.

The servers on loopback (127.0.0.1, 127.0.0.2 and ::1) serve real images, so a check that let
a URL through would load it and draw a heatmap; their routes are the traps (redirects, huge,
drip-fed and stalled responses, HTML named like a PNG). The audit hook records every file
opened and every socket connected while ``AUDIT.active`` is set.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdrant_xai.images.policy import ImageSourcePolicy

LIMIT = 200_000  # bytes: every policy's cap
HUGE_STREAM = 64 * 1024 * 1024  # what /huge would send if nobody stopped reading
DRIP_SECONDS = 0.05  # between bytes of /drip
TIMEOUT = 1.0  # total seconds per fetch
READ_TIMEOUT = 0.5


# -- audit: files opened and sockets connected --------------------------------------------


@dataclass
class _Audit:
    active: bool = False
    opened: list[str] = field(default_factory=list)
    connected: list[tuple[Any, ...]] = field(default_factory=list)


AUDIT = _Audit()


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not AUDIT.active:
        return
    if event == "open" and args and isinstance(args[0], str | bytes):
        path = args[0]
        AUDIT.opened.append(os.fsdecode(path))
    elif event == "socket.connect" and len(args) > 1:
        AUDIT.connected.append(tuple(args[1]) if isinstance(args[1], tuple) else (args[1],))


sys.addaudithook(_hook)  # audit hooks cannot be removed; this one idles unless active


# -- local HTTP servers on loopback ----------------------------------------------------------


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, png: bytes) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family
        super().__init__((host, 0), _Handler)
        self.png = png
        self.requests: list[str] = []
        self.sent = 0  # bytes of /huge written before the client hung up
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        with self.server.lock:
            self.server.requests.append(parts.path)
        route = getattr(self, "_" + parts.path.strip("/").replace("-", "_").replace(".", "_"), None)
        if route is None:
            self._reply(404, "text/plain", b"no such route")
            return
        # the client may stop reading: what the caps are for
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route(urllib.parse.parse_qs(parts.query))

    def _reply(self, status: int, media: str, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _ok_png(self, _query: dict[str, list[str]]) -> None:
        self._reply(200, "image/png", self.server.png)

    def _redirect(self, query: dict[str, list[str]]) -> None:
        self.send_response(302)
        self.send_header("Location", query["to"][0])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _loop(self, _query: dict[str, list[str]]) -> None:
        self._redirect({"to": ["/loop"]})

    def _html(self, _query: dict[str, list[str]]) -> None:
        self._reply(200, "text/html", b"<html><script>alert(1)</script></html>")

    def _json(self, _query: dict[str, list[str]]) -> None:
        self._reply(200, "application/json", b'{"image": "no"}')

    def _fake_png(self, _query: dict[str, list[str]]) -> None:
        self._reply(200, "image/png", b"<html>not a png</html>" * 10)

    def _gzip(self, _query: dict[str, list[str]]) -> None:
        self._reply(200, "image/png", b"\x1f\x8b" + b"\0" * 64, Content_Encoding="gzip")

    def _huge_declared(self, _query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(10**12))
        self.end_headers()
        self.wfile.write(self.server.png[:1024])

    def _huge(self, _query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Connection", "close")  # no length: the body ends when we close
        self.end_headers()
        block = self.server.png + b"\0" * (65536 - len(self.server.png) % 65536)
        try:
            while self.server.sent < HUGE_STREAM:
                self.wfile.write(block)
                self.server.sent += len(block)
        finally:
            self.close_connection = True

    def _drip(self, _query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.server.png)))
        self.end_headers()
        for byte in self.server.png:  # one byte at a time, each read well within its timeout
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(DRIP_SECONDS)

    def _stall(self, _query: dict[str, list[str]]) -> None:
        time.sleep(3 * READ_TIMEOUT)  # no status line at all
        self._reply(200, "image/png", self.server.png)


# -- the cases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile source: what must come out (``refused``, ``load`` for ImageLoadError,
    ``ok`` for the controls that show the setup can succeed)."""

    name: str
    source: str
    policy: str
    expect: str


def _resolver() -> Callable[[str, int], Sequence[str]]:
    """Test names: one server name, and names that resolve where they must not lead."""
    names = {
        "cdn.test": ["127.0.0.1"],
        "other.test": ["127.0.0.2"],
        "internal.test": ["10.1.2.3"],
        "metadata.test": ["169.254.169.254"],
        "mapped.test": ["::ffff:127.0.0.2"],
        "rebind.test": ["93.184.216.34", "127.0.0.1"],
        "localhost": ["127.0.0.1", "::1"],
    }

    def resolve(host: str, port: int) -> Sequence[str]:
        if host in names:
            return names[host]
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # numeric forms only
        return [str(info[4][0]) for info in infos]

    return resolve


def policies_for(root: Path) -> dict[str, ImageSourcePolicy]:
    timing = {"timeout": TIMEOUT, "read_timeout": READ_TIMEOUT, "connect_timeout": READ_TIMEOUT}
    web = {"allow_urls": True, "url_schemes": ["http", "https"], "resolver": _resolver()}
    return {
        # local files under the root; no URLs
        "files": ImageSourcePolicy([root], max_bytes=LIMIT, **timing),
        # any host name, but no loopback, private or link-local address
        "any host": ImageSourcePolicy(allowed_hosts=["*"], max_bytes=LIMIT, **web, **timing),
        # the loopback IP allowed as a host name: the address check still refuses it
        "127.0.0.1 as host": ImageSourcePolicy(
            allowed_hosts=["127.0.0.1"], max_bytes=LIMIT, **web, **timing
        ),
        # https only
        "https only": ImageSourcePolicy(
            allow_urls=True, allowed_hosts=["*"], max_bytes=LIMIT, **timing
        ),
        # the test server, explicitly: host cdn.test, address 127.0.0.1 allowed
        "server": ImageSourcePolicy(
            allowed_hosts=["cdn.test"],
            allowed_networks=["127.0.0.1/32"],
            max_bytes=LIMIT,
            **web,
            **timing,
        ),
        # any host, only 127.0.0.1 among the non-global addresses: redirects pass the host
        # allow-list and must be stopped by the address check
        "server, any host": ImageSourcePolicy(
            allowed_hosts=["*"],
            allowed_networks=["127.0.0.1/32"],
            max_bytes=LIMIT,
            **web,
            **timing,
        ),
    }


def hostile_cases(root: Path, outside: Path, servers: dict[str, Server]) -> list[Case]:
    p1, p2, p6 = servers["main"].port, servers["second"].port, servers["v6"].port
    cdn = f"http://cdn.test:{p1}"

    def via(target: str) -> str:
        return f"{cdn}/redirect?to={urllib.parse.quote(target, safe='')}"

    huge_uri = "data:image/png;base64," + base64.b64encode(b"\0" * (3 * LIMIT)).decode()
    files = [
        ("relative traversal", "../../../../../../etc/passwd"),
        ("absolute path outside", "/etc/passwd"),
        ("image outside the root", str(outside / "secret.png")),
        ("root/../outside", f"{root}/../outside/secret.png"),
        ("symlink escape", f"{root}/link.png"),
        ("symlinked folder escape", f"{root}/linkdir/secret.png"),
        ("symlink to /dev/zero", f"{root}/zero.png"),
        ("FIFO in the root", f"{root}/fifo.png"),
        ("folder named .png", f"{root}/dir.png"),
        ("NUL byte", f"{root}/ok.png\x00/../../etc/passwd"),
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("file://localhost/etc/passwd", "file://localhost/etc/passwd"),
        ("file: percent-encoded name", "file:///etc/%70%61sswd"),
        ("file: percent-encoded ..", f"file://{root}/%2e%2e/outside/secret.png"),
        ("file: percent-encoded slash", f"file://{root}/..%2foutside%2fsecret.png"),
        ("file: symlink", f"file://{root}/link.png"),
        ("file: one slash", "file:/etc/passwd"),
        ("FILE: upper case", "FILE:///etc/passwd"),
        ("file: remote host", "file://evil.example/share/x.png"),
        ("file: credentials", "file://user:pw@localhost/etc/passwd"),
        ("tilde", "~/../../etc/passwd"),
        ("ftp scheme", f"ftp://127.0.0.1:{p1}/ok.png"),
        ("data: not an image", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="),
        ("URL while URLs are off", f"http://127.0.0.1:{p1}/ok.png"),
    ]
    out = [Case(name, source, "files", "refused") for name, source in files]
    out += [
        Case("huge sparse file in the root", f"{root}/huge.png", "files", "load"),
        Case("huge data: URI", huge_uri, "files", "load"),
    ]
    addresses = [
        ("loopback IPv4", f"http://127.0.0.1:{p1}/ok.png"),
        ("loopback 127.0.0.2", f"http://127.0.0.2:{p2}/ok.png"),
        ("localhost", f"http://localhost:{p1}/ok.png"),
        ("loopback IPv6", f"http://[::1]:{p6}/ok.png"),
        ("IPv4-mapped IPv6", f"http://[::ffff:127.0.0.1]:{p1}/ok.png"),
        ("IPv4-mapped IPv6, hex", f"http://[::ffff:7f00:1]:{p1}/ok.png"),
        ("NAT64 of loopback", f"http://[64:ff9b::7f00:1]:{p1}/ok.png"),
        ("6to4 of loopback", f"http://[2002:7f00:1::1]:{p1}/ok.png"),
        ("decimal IPv4", f"http://2130706433:{p1}/ok.png"),
        ("hex IPv4", f"http://0x7f000001:{p1}/ok.png"),
        ("short IPv4", f"http://127.1:{p1}/ok.png"),
        ("unspecified 0.0.0.0", f"http://0.0.0.0:{p1}/ok.png"),
        ("cloud metadata", "http://169.254.169.254/latest/meta-data/"),
        ("private 10/8", "http://10.0.0.1/x.png"),
        ("private 172.16/12", "http://172.16.0.1/x.png"),
        ("private 192.168/16", "http://192.168.0.1/x.png"),
        ("carrier-grade NAT", "http://100.64.0.1/x.png"),
        ("IPv6 link-local", "http://[fe80::1]/x.png"),
        ("IPv6 unique local", "http://[fd00::1]/x.png"),
        ("name resolving to private", "http://internal.test/x.png"),
        ("name resolving to global and loopback", f"http://rebind.test:{p1}/ok.png"),
        ("credentials in the URL", f"http://user:pw@127.0.0.1:{p1}/ok.png"),
    ]
    out += [Case(name, source, "any host", "refused") for name, source in addresses]
    out += [
        Case(
            "loopback allowed as host name",
            f"http://127.0.0.1:{p1}/ok.png",
            "127.0.0.1 as host",
            "refused",
        ),
        Case(
            "http under an https-only policy",
            f"http://example.org:{p1}/ok.png",
            "https only",
            "refused",
        ),
        Case("redirect to loopback IP", via(f"http://127.0.0.1:{p1}/ok.png"), "server", "refused"),
        Case("redirect to localhost", via(f"http://localhost:{p1}/ok.png"), "server", "refused"),
        Case("redirect to file:", via("file:///etc/passwd"), "server", "refused"),
        Case("redirect to metadata", via("http://169.254.169.254/"), "server", "refused"),
        Case(
            "redirect to 127.0.0.2 (any host)",
            via(f"http://127.0.0.2:{p2}/ok.png"),
            "server, any host",
            "refused",
        ),
        Case(
            "redirect to ::1 (any host)",
            via(f"http://[::1]:{p6}/ok.png"),
            "server, any host",
            "refused",
        ),
        Case(
            "redirect to a name on 127.0.0.2",
            via(f"http://other.test:{p2}/ok.png"),
            "server, any host",
            "refused",
        ),
        Case(
            "redirect to IPv4-mapped 127.0.0.2",
            via(f"http://mapped.test:{p2}/ok.png"),
            "server, any host",
            "refused",
        ),
        Case(
            "redirect to metadata (any host)",
            via("http://metadata.test/"),
            "server, any host",
            "refused",
        ),
        Case("redirect loop", f"{cdn}/loop", "server", "load"),
        Case("huge response, no length", f"{cdn}/huge", "server", "load"),
        Case("huge Content-Length", f"{cdn}/huge-declared", "server", "load"),
        Case("drip-feed response", f"{cdn}/drip", "server", "load"),
        Case("no answer", f"{cdn}/stall", "server", "load"),
        Case("text/html", f"{cdn}/html", "server", "load"),
        Case("application/json", f"{cdn}/json", "server", "load"),
        Case("image/png that is HTML", f"{cdn}/fake.png", "server", "load"),
        Case("gzip-encoded body", f"{cdn}/gzip", "server", "load"),
    ]
    return out


def control_cases(root: Path, servers: dict[str, Server]) -> list[Case]:
    cdn = f"http://cdn.test:{servers['main'].port}"
    return [
        Case("control: file in the root", str(root / "ok.png"), "files", "ok"),
        Case("control: file:// in the root", f"file://{root}/ok.png", "files", "ok"),
        Case("control: the allowed server", f"{cdn}/ok.png", "server", "ok"),
        Case("control: allowed redirect", f"{cdn}/redirect?to=%2Fok.png", "server", "ok"),
    ]
