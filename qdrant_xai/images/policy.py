"""Reading images named in payloads, which are untrusted input.

A payload's ``source`` was written by whoever could write to the collection, so the
:class:`ImageSourcePolicy` decides what such a string may make this process read, and
:meth:`ImageSourcePolicy.open` reads it by its kind:

* **local paths** (and ``file://`` URLs, which follow the same rules): only regular files
  beneath the configured roots, read by :mod:`qdrant_xai.images.local` (``..`` and symlink
  escapes, special files and symlinks swapped in after the check are refused). A relative
  path is looked up beneath the roots (the first root holding it), never in the current
  folder.
* **base64**: ``data:image/...;base64,...`` URIs, and raw base64 images (how LlamaIndex's
  ``ImageNode(image=...)`` and some LangChain stores keep them: recognised by the image
  signature their first bytes decode to, or read as base64 when the caller says so with
  ``open(source, kind="base64")``), decoded here. The size is checked from the string
  length before anything is decoded; failures raise :class:`InlineImageError`, whose
  ``problem`` says what is wrong.
* **http(s) URLs**: off by default. When enabled, fetched by :mod:`qdrant_xai.images.remote`:
  only allowed schemes and hosts, no internal addresses (checked per redirect hop, pinned
  against DNS rebinding), capped in bytes and time.

Every byte read this way is decoded by :func:`~qdrant_xai.images.load.load_image` under the
policy's :class:`~qdrant_xai.images.load.ImageLimits` (decompression-bomb guard, odd shapes).
Refusals raise :class:`~qdrant_xai.SourceNotAllowedError`; failures to fetch or decode raise
:class:`~qdrant_xai.ImageLoadError`. Messages name the option to change and never echo a
URL's credentials or query string, nor a base64 payload.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qdrant_xai.errors import SourceNotAllowedError
from qdrant_xai.images.labels import redacted, shown
from qdrant_xai.images.load import ImageLimits, LoadedImage, load_image
from qdrant_xai.images.local import file_url_path, local_path, read_local
from qdrant_xai.images.remote import (
    URL_SCHEMES,
    IPNetwork,
    Resolver,
    allowed_host_entry,
    fetch,
    host_allowed,
    network_entry,
)
from qdrant_xai.images.sniff import (
    SCHEME,
    DataUri,
    classify_source,
    decode_base64,
    image_signature,
    looks_like_base64_image,
)

__all__ = [
    "DataUri",
    "ImageSourcePolicy",
    "Resolver",
    "SourceKind",
]

SourceKind = Literal["auto", "path", "url", "base64"]
"""How :meth:`ImageSourcePolicy.open` reads a source string (see there)."""

_KINDS = ("auto", "path", "url", "base64")
_MAX_PATH = 4096  # Linux's PATH_MAX: a longer string names no file
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


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
        unknown = [s for s in schemes if s not in URL_SCHEMES]
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
                dict.fromkeys(allowed_host_entry(h) for h in _strings(allowed_hosts))
            ),
            "allow_private": bool(allow_private),
            "allowed_networks": tuple(
                network_entry(n)
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
        return host_allowed(self.allowed_hosts, host)

    def resolve(self, source: str | os.PathLike[str]) -> Path:
        """The local path ``source`` (a path or ``file://`` URL) names, if the policy allows it.

        Raises:
            SourceNotAllowedError: it is not a local source, or it resolves outside the
                roots, or it exists and is not a regular file.
        """
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
            return local_path(self._beneath_roots(source), shown(source), roots=self.roots)
        kind = _sniff(source)
        if kind == "file":
            return file_url_path(source, roots=self.roots)
        if kind != "path" or looks_like_base64_image(source):
            raise SourceNotAllowedError(
                f"{redacted(source) if kind != 'path' else f'<base64, {len(source)} chars>'}: "
                "not a local path; read it with ImageSourcePolicy.open()"
            )
        return local_path(self._beneath_roots(source), shown(source), roots=self.roots)

    def is_image_source(self, source: str) -> bool:
        """Whether a payload string is an image this policy could read: a data URI or raw
        base64 image, a path or URL with an image extension, or a local file without one
        whose first bytes are an image signature (see :mod:`qdrant_xai.images.sniff`).
        Reads at most a file's first bytes; never raises."""
        verdict = classify_source(source)
        if verdict == "unknown":
            return self.looks_like_image_file(source)
        return verdict == "image"

    def looks_like_image_file(self, source: str) -> bool:
        """Whether ``source`` (a path, relative ones beneath the roots) is a regular file
        beneath the roots whose first bytes are an image signature; False for anything
        else, without raising."""
        try:
            path = self.resolve(source)
        except SourceNotAllowedError:
            return False
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            return image_signature(os.read(fd, 32)) is not None
        except OSError:
            return False
        finally:
            os.close(fd)

    def open(self, source: str | os.PathLike[str], kind: SourceKind = "auto") -> LoadedImage:
        """Reads and decodes the image ``source`` names, under the policy.

        Args:
            source: a local path, a ``file://``, ``data:image/...;base64,`` or http(s) URL,
                or raw base64.
            kind: ``"auto"`` reads a source that starts with a scheme (``https:``, ``file:``,
                ``data:``, two letters or more) as a URL, raw base64 whose first bytes
                decode to an image signature as base64, and anything else as a path
                (relative paths beneath the roots); ``"path"`` reads it as a path even if
                it looks like a URL; ``"url"`` refuses anything without a scheme;
                ``"base64"`` decodes raw base64 (or a data URI) whatever it looks like.

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
            return self._open_path(source)
        if kind == "base64":
            if source.lstrip()[:5].lower() == "data:":
                return self._open_data_uri(source.strip())
            return self._open_base64(source, "base64", f"<base64, {len(source)} chars>")
        sniffed = _sniff(source)
        if kind == "url" and sniffed == "path":
            raise SourceNotAllowedError(
                f"{shown(source)}: not a URL (no scheme); pass kind='path' or 'auto' to read "
                "local files"
            )
        if sniffed == "path":
            if looks_like_base64_image(source):  # the size is judged before decoding
                return self._open_base64(source, "base64 images", f"<base64, {len(source)} chars>")
            return self._open_path(source)
        if sniffed == "file":
            return self._read(file_url_path(source, roots=self.roots), redacted(source))
        if sniffed == "data":
            return self._open_data_uri(source)
        if sniffed in URL_SCHEMES:
            return self._open_url(source)
        raise SourceNotAllowedError(
            f"{redacted(source)}: the {sniffed}: scheme is not read; image sources are local "
            "paths, file:// URLs, data:image/...;base64 URIs or http(s) URLs (if a local file "
            "name starts like this, write it as ./NAME or pass kind='path')"
        )

    # -- reading by kind -----------------------------------------------------------------

    def _open_path(self, source: str) -> LoadedImage:
        label = shown(source)
        return self._read(local_path(self._beneath_roots(source), label, roots=self.roots), label)

    def _beneath_roots(self, source: str) -> str:
        """A relative ``source`` joined to the first root that holds it (to the first root
        when none does); absolute paths as they are. The result is still checked against
        the roots, so ``../`` cannot leave them."""
        if len(source) > _MAX_PATH:  # messages would quote its resolved form in full
            raise SourceNotAllowedError(
                f"{shown(source, 60)}: {len(source)} characters, too long for a path and not a "
                "base64 image; store a path, a URL or the image as base64"
            )
        if not source or "\x00" in source or not self.roots or os.path.isabs(source):
            return source
        candidates = [root / source for root in self.roots]
        return str(next((c for c in candidates if os.path.lexists(c)), candidates[0]))

    def _read(self, path: Path, label: str) -> LoadedImage:
        data = read_local(path, label, roots=self.roots, limit=self.byte_limit)
        return self._decode(data, label)

    def _open_url(self, source: str) -> LoadedImage:
        label = redacted(source)
        if not self.allow_urls:
            raise SourceNotAllowedError(
                f"{label}: URL image sources are not fetched by this policy; set "
                "allow_urls=True and allowed_hosts=[...] to fetch them, or download the image "
                "and store a local path under image_roots"
            )
        return self._decode(fetch(self, source, label), label)

    def _open_data_uri(self, source: str) -> LoadedImage:
        uri = DataUri.parse(source)
        if not uri.is_image:
            raise SourceNotAllowedError(
                f"{uri.label}: only data:image/...;base64,... URIs are read as images"
            )
        if not uri.is_base64:
            raise SourceNotAllowedError(
                f"{uri.label}: only base64 data URIs are read (data:image/...;base64,...)"
            )
        return self._open_base64(uri.payload or "", "data: URIs", uri.label)

    def _open_base64(self, text: str, what: str, label: str) -> LoadedImage:
        if not self.allow_base64:
            raise SourceNotAllowedError(
                f"{label}: {what} are not read by this policy; set allow_base64=True"
            )
        data = decode_base64(text, label=label, limit=self.byte_limit)
        return self._decode(data, label)

    def _decode(self, data: bytes, label: str) -> LoadedImage:
        limits = dataclasses.replace(self.limits, max_bytes=self.byte_limit)
        return load_image(data, limits=limits, name=label)


def _sniff(source: str) -> str:
    """``"path"``, ``"file"``, ``"data"`` or the (lower-case) scheme of another URL."""
    match = SCHEME.match(source)
    return match.group(1).lower() if match else "path"


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
