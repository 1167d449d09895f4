"""Reading images named in payloads, which are untrusted input.

A payload's ``source`` was written by whoever could write to the collection, so the
:class:`ImageSourcePolicy` decides what such a string may make this process read:

* **local paths** (and ``file://`` URLs, which follow the same rules): only regular files that
  resolve, symlinks followed, inside one of the configured roots. ``..``, absolute paths
  elsewhere and symlinks pointing out of a root are refused; directories, FIFOs and devices
  are refused without being read (a FIFO never blocks the caller). On POSIX the file is
  opened one path component at a time below the root with ``O_NOFOLLOW``, so a symlink
  swapped in after the check is refused rather than followed.
* **base64**: ``data:image/...;base64,...`` URIs, and raw base64 when the caller says so
  (``open(source, kind="base64")``). The size is checked from the string length before
  anything is decoded.
* **http(s) URLs**: off by default. When enabled, only the schemes in ``url_schemes`` and the
  hosts in ``allowed_hosts`` are fetched; every host is resolved and refused when any of its
  addresses is loopback, private, link-local, multicast, reserved, unspecified or otherwise
  not global (IPv4-mapped, 6to4 and NAT64 IPv6 forms are unwrapped first), unless
  ``allow_private`` or ``allowed_networks`` say otherwise. The connection goes to the address
  that was checked (the URL is rewritten to it, with the ``Host`` header and TLS server name
  of the original host), so DNS cannot rebind between check and connect. Redirects are not
  followed automatically: each hop is checked again, up to ``max_redirects``. Responses are
  capped at ``max_bytes`` (``Content-Length`` first, then while streaming) and bounded by
  connect, read and total timeouts. Environment proxies and ``.netrc`` are ignored.

Every byte read this way is decoded by :func:`~qdrant_xai.images.load.load_image` under the
policy's :class:`~qdrant_xai.images.load.ImageLimits` (decompression-bomb guard, odd shapes).
Refusals raise :class:`~qdrant_xai.SourceNotAllowedError`; failures to fetch or decode raise
:class:`~qdrant_xai.ImageLoadError`. Messages name the option to change and never echo a
URL's credentials or query string, nor a base64 payload.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import errno
import ipaddress
import os
import re
import socket
import ssl
import stat
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import httpx

from qdrant_xai.errors import ImageLoadError, SourceNotAllowedError
from qdrant_xai.images.load import ImageLimits, LoadedImage, _read_at_most, load_image

__all__ = ["ImageSourcePolicy", "Resolver", "SourceKind"]

SourceKind = Literal["auto", "path", "url", "base64"]
"""How :meth:`ImageSourcePolicy.open` reads a source string (see there)."""

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> IP address strings``; the default uses :func:`socket.getaddrinfo`."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_KINDS = ("auto", "path", "url", "base64")
_URL_SCHEMES = frozenset({"http", "https"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A scheme needs two characters or more, so a Windows drive ("C:\\x.png") stays a path.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?$")
_BASE64_WHITESPACE = re.compile(r"[ \t\r\n]")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_MESSAGE_SOURCE_CHARS = 200


@dataclass(frozen=True, init=False)
class ImageSourcePolicy:
    """Which payload image sources may be read, and how.

    Setup::

        from qdrant_xai.images.policy import ImageSourcePolicy

        # local files under two folders only (what Explainer(image_roots=...) builds)
        policy = ImageSourcePolicy.from_roots(["photos/", "/data/scans"])

        # also https images from one CDN and its subdomains, 20 MB and 15 s at most
        policy = ImageSourcePolicy(
            roots=["photos/"],
            allow_urls=True,
            allowed_hosts=["cdn.example.org", "*.cdn.example.org"],
            max_bytes=20_000_000,
            timeout=15,
        )

        # from strings, e.g. environment variables or an MCP server's configuration
        policy = ImageSourcePolicy.from_settings(
            {"roots": "photos", "allow_urls": "true", "allowed_hosts": "cdn.example.org"}
        )

    Use::

        loaded = policy.open(hit.payload["source"])        # -> LoadedImage
        loaded = policy.open(b64_string, kind="base64")    # raw base64 from an API
        print(policy.describe())

    Args:
        roots: folders whose files may be read; a path that resolves outside all of them
            (``..``, a symlink, an absolute path elsewhere) is refused. Empty: no local reads.
        limits: decoding bounds applied to every image read.
        allow_base64: read ``data:image/...;base64,...`` URIs and ``kind="base64"`` sources.
        allow_urls: fetch http(s) URLs at all (off by default).
        url_schemes: the URL schemes fetched, among ``"https"`` and ``"http"``.
        allowed_hosts: host names fetched: exact names, ``"*.example.org"`` for any
            subdomain of example.org at any depth (not example.org itself), IP literals, or
            ``"*"`` for any host. Empty: no host.
        allow_private: also fetch from loopback, private, link-local and other non-global
            addresses. Only for trusted payloads: it lets them reach internal services.
        allowed_networks: networks (``"10.1.2.0/24"``) fetched even though not global, a
            narrower alternative to ``allow_private``.
        max_bytes: the most bytes read from any source (file, base64 or response); ``None``
            uses ``limits.max_bytes``; the smaller of the two applies.
        timeout: total seconds for one fetch, DNS and redirects included. The deadline is
            checked between reads, so a fetch ends at most one ``read_timeout`` after it.
        connect_timeout: seconds to resolve a host and to connect to it.
        read_timeout: seconds to wait for any single read from the server.
        max_redirects: redirect hops followed, each checked like the first URL.
        ca_bundle: a PEM file of CA certificates to verify https servers with, instead of
            the default bundle (for an internal CA).
        resolver: ``(host, port) -> [ip, ...]`` used instead of the system resolver.
    """

    roots: tuple[Path, ...]
    limits: ImageLimits
    allow_base64: bool
    allow_urls: bool
    url_schemes: tuple[str, ...]
    allowed_hosts: tuple[str, ...]
    allow_private: bool
    allowed_networks: tuple[IPNetwork, ...]
    max_bytes: int | None
    timeout: float
    connect_timeout: float
    read_timeout: float
    max_redirects: int
    ca_bundle: Path | None
    resolver: Resolver | None = dataclasses.field(default=None, compare=False, repr=False)

    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]] = (),
        limits: ImageLimits | None = None,
        *,
        allow_base64: bool = True,
        allow_urls: bool = False,
        url_schemes: Sequence[str] = ("https",),
        allowed_hosts: Sequence[str] = (),
        allow_private: bool = False,
        allowed_networks: Sequence[str | IPNetwork] = (),
        max_bytes: int | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        max_redirects: int = 3,
        ca_bundle: str | os.PathLike[str] | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        schemes = tuple(dict.fromkeys(_strings(url_schemes, str.lower)))
        unknown = [s for s in schemes if s not in _URL_SCHEMES]
        if unknown:
            raise ValueError(
                f"url_schemes {unknown} are not supported; use 'https' and/or 'http' "
                "(file:// sources follow the roots, data: URIs allow_base64)"
            )
        for name, value in (
            ("timeout", timeout),
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, not {max_bytes!r}")
        if max_redirects < 0:
            raise ValueError(f"max_redirects must be 0 or more, not {max_redirects!r}")
        values = {
            "roots": tuple(Path(r).resolve() for r in roots),
            "limits": limits or ImageLimits(),
            "allow_base64": bool(allow_base64),
            "allow_urls": bool(allow_urls),
            "url_schemes": schemes,
            "allowed_hosts": tuple(
                dict.fromkeys(_allowed_host(h) for h in _strings(allowed_hosts))
            ),
            "allow_private": bool(allow_private),
            "allowed_networks": tuple(
                _network(n)
                for n in (
                    [allowed_networks] if isinstance(allowed_networks, str) else allowed_networks
                )
            ),
            "max_bytes": max_bytes,
            "timeout": float(timeout),
            "connect_timeout": float(connect_timeout),
            "read_timeout": float(read_timeout),
            "max_redirects": int(max_redirects),
            "ca_bundle": Path(ca_bundle) if ca_bundle is not None else None,
            "resolver": resolver,
        }
        for name, checked in values.items():
            object.__setattr__(self, name, checked)

    @classmethod
    def from_roots(
        cls, roots: Sequence[str | os.PathLike[str]], *, limits: ImageLimits | None = None
    ) -> ImageSourcePolicy:
        """Local files under ``roots`` (and base64 data URIs); no URLs."""
        return cls(roots, limits)

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, object] | None = None, /, **overrides: object
    ) -> ImageSourcePolicy:
        """A policy from loosely typed settings, e.g. parsed flags, env vars or JSON config.

        Keys are the constructor's keyword names. Besides the typed values, strings are
        accepted: ``roots`` separated by ``os.pathsep``, ``allowed_hosts``, ``url_schemes``
        and ``allowed_networks`` separated by commas, booleans as ``true/false/1/0/yes/no``,
        numbers as decimal strings. ``None`` values are ignored (the default applies).

        Raises:
            ValueError: an unknown key or a value that cannot be converted.
        """
        merged = {**(settings or {}), **overrides}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown image source settings {unknown}; known: {sorted(known)}")
        kwargs: dict[str, object] = {}
        for key, value in merged.items():
            if value is None:
                continue
            if key == "roots" and isinstance(value, str):
                value = [part for part in value.split(os.pathsep) if part]
            elif key in ("allowed_hosts", "url_schemes", "allowed_networks") and isinstance(
                value, str
            ):
                value = [part.strip() for part in value.split(",") if part.strip()]
            elif key in ("allow_base64", "allow_urls", "allow_private"):
                value = _boolean(key, value)
            elif key in ("max_bytes", "max_redirects"):
                value = _number(key, value, int)
            elif key in ("timeout", "connect_timeout", "read_timeout"):
                value = _number(key, value, float)
            kwargs[key] = value
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def byte_limit(self) -> int:
        """The most bytes read from one source: ``max_bytes`` capped by ``limits.max_bytes``."""
        limit = self.limits.max_bytes
        return limit if self.max_bytes is None else min(limit, self.max_bytes)

    def describe(self) -> str:
        """One line saying what the policy allows, for logs and error messages."""
        local = "files under " + ", ".join(str(r) for r in self.roots) if self.roots else "no files"
        inline = "base64 images" if self.allow_base64 else "no base64"
        if not self.allow_urls:
            urls = "no URLs"
        else:
            if self.allow_private:
                where = "any address"
            elif self.allowed_networks:
                where = "public addresses and " + ", ".join(str(n) for n in self.allowed_networks)
            else:
                where = "public addresses only"
            urls = (
                f"{'/'.join(self.url_schemes)} URLs from "
                f"{', '.join(self.allowed_hosts) or 'no host (allowed_hosts is empty)'} "
                f"({where}, {self.timeout:g} s, {self.max_redirects} redirects)"
            )
        return f"image sources: {local}; {inline}; {urls}; at most {self.byte_limit} bytes each"

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` (a name or IP literal) is on the ``allowed_hosts`` list.

        Only the list is consulted; addresses are checked when a URL is fetched.
        """
        try:
            name = _normal_host(host)
        except ValueError:
            return False
        for allowed in self.allowed_hosts:
            if allowed == "*" or allowed == name:
                return True
            if allowed.startswith("*.") and not _is_ip(name) and name.endswith(allowed[1:]):
                return True
        return False

    def resolve(self, source: str | os.PathLike[str]) -> Path:
        """The local path ``source`` (a path or ``file://`` URL) names, if the policy allows it.

        Raises:
            SourceNotAllowedError: it is not a local source, or it resolves outside the
                roots, or it exists and is not a regular file.
        """
        if isinstance(source, os.PathLike):
            return self._local_path(os.fspath(source), _shown(os.fspath(source)))
        kind = _sniff(source)
        if kind == "file":
            return self._file_url_path(source)
        if kind != "path":
            raise SourceNotAllowedError(
                f"{_redacted(source)}: not a local path; read it with ImageSourcePolicy.open()"
            )
        return self._local_path(source, _shown(source))

    def open(self, source: str | os.PathLike[str], kind: SourceKind = "auto") -> LoadedImage:
        """Reads and decodes the image ``source`` names, under the policy.

        Args:
            source: a local path, a ``file://``, ``data:image/...;base64,`` or http(s) URL,
                or raw base64 with ``kind="base64"``.
            kind: ``"auto"`` reads a source that starts with a scheme (``https:``, ``file:``,
                ``data:``, two letters or more) as a URL and anything else as a path;
                ``"path"`` reads it as a path even if it looks like a URL; ``"url"``
                refuses anything without a scheme; ``"base64"`` decodes raw base64 (or a
                data URI). Raw base64 is never guessed.

        Raises:
            SourceNotAllowedError: the policy refuses the source (and says what to allow).
            ImageLoadError: it is allowed but cannot be read, fetched or decoded, or is
                too large.
        """
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
        if isinstance(source, os.PathLike):
            if kind not in ("auto", "path"):
                raise ValueError(f"a path object cannot be read as kind={kind!r}")
            source, kind = os.fspath(source), "path"
        if not isinstance(source, str):
            raise SourceNotAllowedError(
                f"image source of type {type(source).__name__}; payload sources must be strings"
            )
        if kind == "path":
            label = _shown(source)
            return self._decode(self._read_local(self._local_path(source, label), label), label)
        if kind == "base64":
            if source.lstrip()[:5].lower() == "data:":
                return self._open_data_uri(source.strip())
            return self._open_base64(source, "base64", f"<base64, {len(source)} chars>")
        sniffed = _sniff(source)
        if kind == "url" and sniffed == "path":
            raise SourceNotAllowedError(
                f"{_shown(source)}: not a URL (no scheme); pass kind='path' or 'auto' to read "
                "local files"
            )
        if sniffed == "path":
            label = _shown(source)
            return self._decode(self._read_local(self._local_path(source, label), label), label)
        if sniffed == "file":
            path = self._file_url_path(source)
            label = _redacted(source)
            return self._decode(self._read_local(path, label), label)
        if sniffed == "data":
            return self._open_data_uri(source)
        if sniffed in _URL_SCHEMES:
            return self._open_url(source)
        raise SourceNotAllowedError(
            f"{_redacted(source)}: the {sniffed}: scheme is not read; image sources are local "
            "paths, file:// URLs, data:image/...;base64 URIs or http(s) URLs (if a local file "
            "name starts like this, write it as ./NAME or pass kind='path')"
        )

    # -- local files -------------------------------------------------------------------

    def _local_path(self, source: str, label: str) -> Path:
        if not source:
            raise SourceNotAllowedError("empty image source; store a path or URL in the payload")
        if "\x00" in source:
            raise SourceNotAllowedError(f"{label}: contains a NUL byte; not a usable path")
        if not self.roots:
            raise SourceNotAllowedError(
                f"{label}: reading images named in payloads is off; allow the folder with "
                "image_roots=[...] (CLI: --image-root DIR)"
            )
        try:
            path = Path(source).resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise SourceNotAllowedError(f"{label}: cannot be resolved ({exc})") from exc
        if not any(path.is_relative_to(root) for root in self.roots):
            raise SourceNotAllowedError(
                f"{label}: resolves to {path}, outside the allowed image roots "
                f"{[str(r) for r in self.roots]}; add its folder to image_roots "
                "(CLI: --image-root DIR) if it should be readable"
            )
        try:
            mode = path.stat().st_mode
        except OSError:
            return path  # missing: reported as an ImageLoadError when opened
        _require_regular(mode, label)
        return path

    def _file_url_path(self, source: str) -> Path:
        label = _redacted(source)
        if _CONTROL.search(source):
            raise SourceNotAllowedError(f"{label}: contains control characters")
        parts = urllib.parse.urlsplit(source)
        if parts.username is not None or parts.password is not None:
            raise SourceNotAllowedError(f"{label}: file:// URLs cannot carry credentials")
        if parts.netloc.lower() not in ("", "localhost"):
            raise SourceNotAllowedError(
                f"{label}: file:// URLs must name a local file (file:///path); a host "
                f"({_shown(parts.netloc)}) would reach another machine's share"
            )
        if not parts.path.startswith("/"):
            raise SourceNotAllowedError(f"{label}: file URLs must be absolute (file:///path)")
        if parts.query or parts.fragment:
            raise SourceNotAllowedError(f"{label}: file:// URLs with ? or # are not read")
        return self._local_path(urllib.request.url2pathname(parts.path), label)

    def _read_local(self, path: Path, label: str) -> bytes:
        root = next(r for r in self.roots if path.is_relative_to(r))
        try:
            fd = _open_beneath(root, path)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, getattr(errno, "EMLINK", -1)):
                raise SourceNotAllowedError(
                    f"{label}: a symlink appeared in the path while opening it; refused"
                ) from exc
            raise ImageLoadError(label, f"cannot read the file ({exc.strerror or exc})") from exc
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            _require_regular(info.st_mode, label)
            limit = self.byte_limit
            if info.st_size > limit:
                raise ImageLoadError(
                    label,
                    f"file is {info.st_size} bytes, over the {limit}-byte limit; downscale it "
                    "or raise max_bytes / ImageLimits.max_bytes",
                )
            try:
                data = _read_at_most(handle, info.st_size, limit)
            except OSError as exc:
                raise ImageLoadError(label, f"cannot read the file ({exc})") from exc
        if len(data) > limit:
            raise ImageLoadError(label, f"file grew past the {limit}-byte limit while read")
        return data

    # -- base64 ------------------------------------------------------------------------

    def _open_data_uri(self, source: str) -> LoadedImage:
        header, comma, payload = source.partition(",")
        params = [p.strip().lower() for p in header[5:].split(";")]
        media = params[0] or "text/plain"
        label = f"data:{_shown(media, 40)} URI ({len(source)} chars)"
        if not comma or not media.startswith("image/"):
            raise SourceNotAllowedError(
                f"{label}: only data:image/...;base64,... URIs are read as images"
            )
        if "base64" not in params[1:]:
            raise SourceNotAllowedError(
                f"{label}: only base64 data URIs are read (data:image/...;base64,...)"
            )
        return self._open_base64(payload, "data: URIs", label)

    def _open_base64(self, text: str, what: str, label: str) -> LoadedImage:
        if not self.allow_base64:
            raise SourceNotAllowedError(
                f"{label}: {what} are not read by this policy; set allow_base64=True"
            )
        limit = self.byte_limit
        # An upper bound of the decoded size, from the length alone, before any work.
        estimate = len(text.rstrip().rstrip("=")) * 3 // 4
        if estimate > limit:
            raise ImageLoadError(
                label,
                f"decodes to about {estimate} bytes, over the {limit}-byte limit; downscale the "
                "image or raise max_bytes / ImageLimits.max_bytes",
            )
        compact = _BASE64_WHITESPACE.sub("", text)
        urlsafe = "-" in compact or "_" in compact
        compact += "=" * (-len(compact) % 4)
        try:
            data = base64.b64decode(compact, altchars=b"-_" if urlsafe else None, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageLoadError(label, f"invalid base64 ({exc})") from exc
        if not data:
            raise ImageLoadError(label, "empty image data")
        return self._decode(data, label)

    # -- URLs --------------------------------------------------------------------------

    def _open_url(self, source: str) -> LoadedImage:
        label = _redacted(source)
        if not self.allow_urls:
            raise SourceNotAllowedError(
                f"{label}: URL image sources are not fetched by this policy; set "
                "allow_urls=True and allowed_hosts=[...] to fetch them, or download the image "
                "and store a local path under image_roots"
            )
        data = self._fetch(source, label)
        return self._decode(data, label)

    def _check_url(self, url: str) -> _Target:
        label = _redacted(url)
        if _CONTROL.search(url) or "\\" in url:
            raise SourceNotAllowedError(f"{label}: control characters or backslashes in a URL")
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise SourceNotAllowedError(f"{label}: not a valid URL ({exc})") from exc
        scheme = parts.scheme.lower()
        if scheme not in self.url_schemes:
            hint = (
                "add it to url_schemes"
                if scheme in _URL_SCHEMES
                else f"only {'/'.join(sorted(_URL_SCHEMES))} can be enabled (url_schemes)"
            )
            raise SourceNotAllowedError(
                f"{label}: the {_shown(scheme, 20) or 'empty'} scheme is not allowed (allowed: "
                f"{list(self.url_schemes)}); {hint}"
            )
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise SourceNotAllowedError(
                f"{label}: URLs with credentials (user:password@) are not fetched; serve the "
                "images without them"
            )
        if not parts.hostname:
            raise SourceNotAllowedError(f"{label}: the URL names no host")
        try:
            host = _normal_host(parts.hostname)
        except ValueError as exc:
            raise SourceNotAllowedError(f"{label}: invalid host name ({exc})") from exc
        if not self.allows_host(host):
            raise SourceNotAllowedError(
                f"{label}: host {host} is not in allowed_hosts "
                f"{list(self.allowed_hosts)}; add it (or '*.{_parent(host)}' for its "
                "subdomains) to allowed_hosts if it should be fetched"
            )
        port = port or (443 if scheme == "https" else 80)
        default_port = port == (443 if scheme == "https" else 80)
        shown_host = f"[{host}]" if ":" in host else host
        host_header = shown_host if default_port else f"{shown_host}:{port}"
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return _Target(scheme, host, port, host_header, target, label)

    def _addresses(self, target: _Target, deadline: float) -> list[str]:
        """The checked addresses of ``target.host``, in resolver order."""
        if _is_ip(target.host):
            found: Sequence[str] = [target.host]
        else:
            found = self._lookup(target, deadline)
        addresses = list(dict.fromkeys(found))
        if not addresses:
            raise ImageLoadError(target.label, f"host {target.host} has no address")
        for text in addresses:
            try:
                address = ipaddress.ip_address(text)
            except ValueError as exc:
                raise SourceNotAllowedError(
                    f"{target.label}: host {target.host} resolved to {text!r}, not an address"
                ) from exc
            problem = self._address_problem(address)
            if problem:
                where = (
                    f"{address} is"
                    if text == target.host
                    else f"host {target.host} resolves to {address},"
                )
                raise SourceNotAllowedError(
                    f"{target.label}: {where} an internal address ({problem}); such addresses "
                    "are not fetched, to keep payloads from reaching internal "
                    f"services. If this server is trusted, add allowed_networks=['{address}/"
                    f"{address.max_prefixlen}'] or set allow_private=True"
                )
        return addresses

    def _lookup(self, target: _Target, deadline: float) -> Sequence[str]:
        resolver = self.resolver or _system_resolver
        result: list[str] = []
        errors: list[Exception] = []

        def run() -> None:
            try:
                result.extend(resolver(target.host, target.port))
            except Exception as exc:  # reported to the caller below
                errors.append(exc)

        thread = threading.Thread(target=run, name="qdrant-xai-dns", daemon=True)
        thread.start()
        thread.join(max(0.0, min(self.connect_timeout, deadline - time.monotonic())))
        if thread.is_alive():
            raise ImageLoadError(
                target.label,
                f"resolving {target.host} took longer than {self.connect_timeout:g} s; raise "
                "connect_timeout (or timeout)",
            )
        if errors:
            exc = errors[0]
            if isinstance(exc, (SourceNotAllowedError, ImageLoadError)):
                raise exc
            raise ImageLoadError(target.label, f"cannot resolve {target.host} ({exc})") from exc
        return result

    def _address_problem(self, address: IPAddress) -> str | None:
        if self.allow_private or any(
            address.version == net.version and address in net for net in self.allowed_networks
        ):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            embedded, form = _embedded_ipv4(address)
            if embedded is not None:
                inner = self._address_problem(embedded)
                return f"{form} {inner}" if inner else None
        for name, flag in (
            ("unspecified", address.is_unspecified),
            ("loopback", address.is_loopback),
            ("link-local", address.is_link_local),
            ("multicast", address.is_multicast),
            ("private", address.is_private),
            ("reserved", address.is_reserved),
        ):
            if flag:
                return name
        if not address.is_global:
            return "not global"
        return None

    def _fetch(self, url: str, label: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        verify: ssl.SSLContext | bool = True
        if self.ca_bundle is not None:
            try:
                verify = ssl.create_default_context(cafile=str(self.ca_bundle))
            except (OSError, ssl.SSLError) as exc:
                raise ImageLoadError(
                    label, f"cannot load ca_bundle {self.ca_bundle} ({exc}); fix the ca_bundle"
                ) from exc
        current = url
        with httpx.Client(
            verify=verify, trust_env=False, follow_redirects=False, max_redirects=0
        ) as client:
            previous: _Target | None = None
            for _ in range(self.max_redirects + 1):
                target = self._check_url(current)
                if previous is not None and previous.scheme == "https" and target.scheme != "https":
                    raise SourceNotAllowedError(
                        f"{previous.label}: redirects to {target.label}, from https to "
                        f"{target.scheme}; refused (store the final https URL)"
                    )
                previous = target
                try:
                    addresses = self._addresses(target, deadline)
                    response = self._connect(client, target, addresses, deadline)
                    try:
                        if response.status_code in _REDIRECTS and "location" in response.headers:
                            location = response.headers["location"]
                            current = urllib.parse.urljoin(current, location)
                            continue
                        return self._body(response, target, deadline)
                    finally:
                        response.close()
                except httpx.TimeoutException as exc:
                    raise ImageLoadError(
                        target.label,
                        f"the server did not answer in time ({type(exc).__name__}; "
                        f"connect_timeout={self.connect_timeout:g} s, read_timeout="
                        f"{self.read_timeout:g} s, timeout={self.timeout:g} s); raise them if "
                        "the server is slow",
                    ) from exc
                except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
                    raise ImageLoadError(
                        target.label,
                        f"fetch failed ({type(exc).__name__}: {_shown(str(exc))})"
                        + _tls_hint(str(exc), target.host),
                    ) from exc
        raise ImageLoadError(
            label,
            f"more than {self.max_redirects} redirects; raise max_redirects or store the final URL",
        )

    def _connect(
        self, client: httpx.Client, target: _Target, addresses: list[str], deadline: float
    ) -> httpx.Response:
        extensions: dict[str, object] = {}
        if target.scheme == "https" and not _is_ip(target.host):
            # TLS and certificate checks use the host name while connecting to the address.
            extensions["sni_hostname"] = target.host
        headers = {
            "Host": target.host_header,
            "Accept": "image/*",
            "Accept-Encoding": "identity",
            "User-Agent": "qdrant-xai",
        }
        last: httpx.TransportError | None = None
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            timeout = httpx.Timeout(
                connect=min(self.connect_timeout, remaining),
                read=min(self.read_timeout, remaining),
                write=min(self.read_timeout, remaining),
                pool=min(self.connect_timeout, remaining),
            )
            literal = f"[{address}]" if ":" in address else address
            request = client.build_request(
                "GET",
                f"{target.scheme}://{literal}:{target.port}{target.target}",
                headers=headers,
                extensions=extensions,
                timeout=timeout,
            )
            try:
                return client.send(request, stream=True)
            except httpx.ConnectError as exc:
                last = exc  # try the host's next address
        if last is not None:
            raise last
        raise httpx.ConnectTimeout("no time left to connect")

    def _body(self, response: httpx.Response, target: _Target, deadline: float) -> bytes:
        label = target.label
        if response.status_code in _REDIRECTS:
            raise ImageLoadError(label, f"HTTP {response.status_code} redirect without Location")
        if not 200 <= response.status_code < 300:
            raise ImageLoadError(
                label,
                f"HTTP {response.status_code} {_shown(response.reason_phrase, 60)}; check the URL "
                "or the server",
            )
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ImageLoadError(
                label, f"the server sent a {_shown(encoding, 30)}-encoded body though asked not to"
            )
        media = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media and not (media.startswith("image/") or media.endswith("octet-stream")):
            raise ImageLoadError(label, f"the server sent {_shown(media, 60)}, not an image")
        limit = self.byte_limit
        length = response.headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise ImageLoadError(
                label,
                f"Content-Length {int(length)} is over the {limit}-byte limit; raise max_bytes "
                "if the image is trusted",
            )
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_raw():
            total += len(chunk)
            if total > limit:
                raise ImageLoadError(
                    label,
                    f"the response exceeds the {limit}-byte limit (cut off while reading); raise "
                    "max_bytes if the image is trusted",
                )
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise ImageLoadError(
                    label,
                    f"the download took longer than timeout={self.timeout:g} s; raise timeout "
                    "if the server is slow",
                )
        return b"".join(chunks)

    # -- decoding ----------------------------------------------------------------------

    def _decode(self, data: bytes, label: str) -> LoadedImage:
        limits = dataclasses.replace(self.limits, max_bytes=self.byte_limit)
        return load_image(data, limits=limits, name=label)


class _Target(NamedTuple):
    scheme: str
    host: str  # normalised: lower-case IDNA name or compressed IP literal
    port: int
    host_header: str
    target: str  # path and query
    label: str  # the URL without credentials or query, for messages


def _tls_hint(error: str, host: str) -> str:
    text = error.lower()
    if "hostname mismatch" in text or "doesn't match" in text:
        return f"; the server's certificate does not cover {host}: fix the URL or the server"
    if "certificate" in text:
        return "; if the server uses an internal CA, set ca_bundle to its PEM file"
    return ""


def _sniff(source: str) -> str:
    """``"path"``, ``"file"``, ``"data"`` or the (lower-case) scheme of another URL."""
    match = _SCHEME.match(source)
    return match.group(1).lower() if match else "path"


def _require_regular(mode: int, label: str) -> None:
    if stat.S_ISREG(mode):
        return
    what = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    raise SourceNotAllowedError(f"{label}: is {what}; only regular image files are read")


def _open_beneath(root: Path, path: Path) -> int:
    """Opens ``path`` (resolved, inside ``root``) read-only without following symlinks.

    Where ``dir_fd`` is supported every component below ``root`` is opened with
    ``O_NOFOLLOW``, so a symlink swapped in after the check makes the open fail (ELOOP)
    instead of leaving the root. ``O_NONBLOCK`` keeps a FIFO from blocking the open.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    file_flags = flags | nofollow | getattr(os, "O_NONBLOCK", 0)
    parts = path.relative_to(root).parts
    directory = getattr(os, "O_DIRECTORY", 0)
    if not parts:
        raise IsADirectoryError(21, "is an image root folder, not a file")
    if not (nofollow and directory and os.open in os.supports_dir_fd):
        return os.open(path, file_flags)
    fd = os.open(root, flags | directory)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, flags | directory | nofollow, dir_fd=fd)
            except NotADirectoryError:
                # O_DIRECTORY | O_NOFOLLOW on a symlink says ENOTDIR; report it as one
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, "symlink in the path") from None
                raise
            os.close(fd)
            fd = child
        return os.open(parts[-1], file_flags, dir_fd=fd)
    finally:
        os.close(fd)


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    return None, ""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _normal_host(host: str) -> str:
    """Lower-case ASCII (IDNA) host name, or a compressed IP literal. ValueError if invalid."""
    name = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if not name:
        raise ValueError("empty host")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{name!r} is not a valid host name") from exc
    if not all(_HOST_LABEL.match(label) for label in ascii_name.split(".")):
        raise ValueError(f"{_shown(name, 80)!r} is not a valid host name")
    return ascii_name


def _allowed_host(entry: str) -> str:
    text = entry.strip().lower()
    if text == "*":
        return text
    if "/" in text or "@" in text or (text.count(":") == 1 and re.search(r":\d*$", text)):
        raise ValueError(
            f"allowed_hosts entry {entry!r}: give host names only (no scheme, port or path), "
            "e.g. 'images.example.org' or '*.example.org'"
        )
    if text.startswith("*."):
        return "*." + _normal_host(text[2:])
    if "*" in text:
        raise ValueError(
            f"allowed_hosts entry {entry!r}: a wildcard must be the whole first label "
            "('*.example.org') or the entry '*'"
        )
    return _normal_host(text)


def _network(value: str | IPNetwork) -> IPNetwork:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(
            f"allowed_networks entry {value!r} is not a network such as '10.0.0.0/8'"
        ) from exc


def _strings(values: Sequence[str] | str, fix: Callable[[str], str] = str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    return [fix(v) for v in values]


def _boolean(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{key} must be true or false, not {value!r}")


def _number(key: str, value: object, kind: type[int] | type[float]) -> int | float:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ValueError(f"{key} must be a number, not {value!r}")


def _parent(host: str) -> str:
    return host.split(".", 1)[1] if "." in host and not _is_ip(host) else host


def _shown(text: str, limit: int = _MESSAGE_SOURCE_CHARS) -> str:
    """``text`` for a message: control characters escaped, long strings shortened."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 20] + f"...({len(text)} chars)"


def _redacted(url: str) -> str:
    """``url`` without userinfo, query or fragment, for messages and labels."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.scheme.lower() == "data":
        return f"data: URI ({len(url)} chars)"
    netloc = parts.netloc.rpartition("@")[2]
    shown = (
        f"{parts.scheme}://{netloc}{parts.path}"
        if netloc or parts.path.startswith("/")
        else (f"{parts.scheme}:{parts.path}")
    )
    if parts.query:
        shown += "?..."
    return _shown(shown)
