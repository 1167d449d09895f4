"""Fetching images named by untrusted http(s) URLs, under a policy's allow-lists.

Only the schemes in ``url_schemes`` and the hosts in ``allowed_hosts`` are fetched; every
host is resolved and refused when any of its addresses is loopback, private, link-local,
multicast, reserved, unspecified or otherwise not global (IPv4-mapped, 6to4 and NAT64 IPv6
forms are unwrapped first), unless ``allow_private`` or ``allowed_networks`` say otherwise.
The connection goes to the address that was checked (the URL is rewritten to it, with the
``Host`` header and TLS server name of the original host), so DNS cannot rebind between
check and connect. Redirects are not followed automatically: each hop is checked again, up
to ``max_redirects``. Responses are capped at the policy's byte limit (``Content-Length``
first, then while streaming) and bounded by connect, read and total timeouts. Environment
proxies and ``.netrc`` are ignored.

:class:`~qdrant_xai.images.policy.ImageSourcePolicy` calls :func:`fetch` with itself;
refusals raise :class:`~qdrant_xai.SourceNotAllowedError`, failures to fetch
:class:`~qdrant_xai.ImageLoadError`. Messages never echo a URL's credentials or query.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import httpx

from qdrant_xai.errors import ImageLoadError, SourceNotAllowedError
from qdrant_xai.images.labels import CONTROL, redacted, shown

if TYPE_CHECKING:
    from qdrant_xai.images.policy import ImageSourcePolicy

__all__ = [
    "URL_SCHEMES",
    "IPNetwork",
    "Resolver",
    "allowed_host_entry",
    "fetch",
    "host_allowed",
    "network_entry",
]

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> IP address strings``; the default uses :func:`socket.getaddrinfo`."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

URL_SCHEMES = frozenset({"http", "https"})
"""The URL schemes a policy can enable (``url_schemes``)."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class _Target(NamedTuple):
    scheme: str
    host: str  # normalised: lower-case IDNA name or compressed IP literal
    port: int
    host_header: str
    target: str  # path and query
    label: str  # the URL without credentials or query, for messages


def fetch(policy: ImageSourcePolicy, url: str, label: str) -> bytes:
    """The body of ``url``, every hop checked against ``policy``.

    Raises:
        SourceNotAllowedError: a hop's scheme, host or address is not allowed, or a
            redirect goes from https to http.
        ImageLoadError: the fetch fails, times out, is not an image or is too large.
    """
    deadline = time.monotonic() + policy.timeout
    verify: ssl.SSLContext | bool = True
    if policy.ca_bundle is not None:
        try:
            verify = ssl.create_default_context(cafile=str(policy.ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ImageLoadError(
                label, f"cannot load ca_bundle {policy.ca_bundle} ({exc}); fix the ca_bundle"
            ) from exc
    current = url
    with httpx.Client(
        verify=verify, trust_env=False, follow_redirects=False, max_redirects=0
    ) as client:
        previous: _Target | None = None
        for _ in range(policy.max_redirects + 1):
            target = _check_url(policy, current)
            if previous is not None and previous.scheme == "https" and target.scheme != "https":
                raise SourceNotAllowedError(
                    f"{previous.label}: redirects to {target.label}, from https to "
                    f"{target.scheme}; refused (store the final https URL)"
                )
            previous = target
            try:
                addresses = _addresses(policy, target, deadline)
                response = _connect(policy, client, target, addresses, deadline)
                try:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        location = response.headers["location"]
                        current = urllib.parse.urljoin(current, location)
                        continue
                    return _body(policy, response, target, deadline)
                finally:
                    response.close()
            except httpx.TimeoutException as exc:
                raise ImageLoadError(
                    target.label,
                    f"the server did not answer in time ({type(exc).__name__}; "
                    f"connect_timeout={policy.connect_timeout:g} s, read_timeout="
                    f"{policy.read_timeout:g} s, timeout={policy.timeout:g} s); raise them if "
                    "the server is slow",
                ) from exc
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
                raise ImageLoadError(
                    target.label,
                    f"fetch failed ({type(exc).__name__}: {shown(str(exc))})"
                    + _tls_hint(str(exc), target.host),
                ) from exc
    raise ImageLoadError(
        label,
        f"more than {policy.max_redirects} redirects; raise max_redirects or store the final URL",
    )


def host_allowed(allowed_hosts: Sequence[str], host: str) -> bool:
    """Whether ``host`` (a name or IP literal) matches an ``allowed_hosts`` entry."""
    try:
        name = _normal_host(host)
    except ValueError:
        return False
    for allowed in allowed_hosts:
        if allowed == "*" or allowed == name:
            return True
        if allowed.startswith("*.") and not _is_ip(name) and name.endswith(allowed[1:]):
            return True
    return False


def allowed_host_entry(entry: str) -> str:
    """An ``allowed_hosts`` entry, normalised. ValueError if it is not a host or wildcard."""
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


def network_entry(value: str | IPNetwork) -> IPNetwork:
    """An ``allowed_networks`` entry as a network. ValueError if it is not one."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(
            f"allowed_networks entry {value!r} is not a network such as '10.0.0.0/8'"
        ) from exc


# -- one hop: the URL, the host's addresses, the connection, the body ------------------------


def _check_url(policy: ImageSourcePolicy, url: str) -> _Target:
    label = redacted(url)
    if CONTROL.search(url) or "\\" in url:
        raise SourceNotAllowedError(f"{label}: control characters or backslashes in a URL")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SourceNotAllowedError(f"{label}: not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in policy.url_schemes:
        hint = (
            "add it to url_schemes"
            if scheme in URL_SCHEMES
            else f"only {'/'.join(sorted(URL_SCHEMES))} can be enabled (url_schemes)"
        )
        raise SourceNotAllowedError(
            f"{label}: the {shown(scheme, 20) or 'empty'} scheme is not allowed (allowed: "
            f"{list(policy.url_schemes)}); {hint}"
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
    if not policy.allows_host(host):
        raise SourceNotAllowedError(
            f"{label}: host {host} is not in allowed_hosts "
            f"{list(policy.allowed_hosts)}; add it (or '*.{_parent(host)}' for its "
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


def _addresses(policy: ImageSourcePolicy, target: _Target, deadline: float) -> list[str]:
    """The checked addresses of ``target.host``, in resolver order."""
    if _is_ip(target.host):
        found: Sequence[str] = [target.host]
    else:
        found = _lookup(policy, target, deadline)
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
        problem = _address_problem(policy, address)
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


def _lookup(policy: ImageSourcePolicy, target: _Target, deadline: float) -> Sequence[str]:
    resolver = policy.resolver or _system_resolver
    result: list[str] = []
    errors: list[Exception] = []

    def run() -> None:
        try:
            result.extend(resolver(target.host, target.port))
        except Exception as exc:  # reported to the caller below
            errors.append(exc)

    thread = threading.Thread(target=run, name="qdrant-xai-dns", daemon=True)
    thread.start()
    thread.join(max(0.0, min(policy.connect_timeout, deadline - time.monotonic())))
    if thread.is_alive():
        raise ImageLoadError(
            target.label,
            f"resolving {target.host} took longer than {policy.connect_timeout:g} s; raise "
            "connect_timeout (or timeout)",
        )
    if errors:
        exc = errors[0]
        if isinstance(exc, (SourceNotAllowedError, ImageLoadError)):
            raise exc
        raise ImageLoadError(target.label, f"cannot resolve {target.host} ({exc})") from exc
    return result


def _address_problem(policy: ImageSourcePolicy, address: IPAddress) -> str | None:
    if policy.allow_private or any(
        address.version == net.version and address in net for net in policy.allowed_networks
    ):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded, form = _embedded_ipv4(address)
        if embedded is not None:
            inner = _address_problem(policy, embedded)
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


def _connect(
    policy: ImageSourcePolicy,
    client: httpx.Client,
    target: _Target,
    addresses: list[str],
    deadline: float,
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
            connect=min(policy.connect_timeout, remaining),
            read=min(policy.read_timeout, remaining),
            write=min(policy.read_timeout, remaining),
            pool=min(policy.connect_timeout, remaining),
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


def _body(
    policy: ImageSourcePolicy, response: httpx.Response, target: _Target, deadline: float
) -> bytes:
    label = target.label
    if response.status_code in _REDIRECTS:
        raise ImageLoadError(label, f"HTTP {response.status_code} redirect without Location")
    if not 200 <= response.status_code < 300:
        raise ImageLoadError(
            label,
            f"HTTP {response.status_code} {shown(response.reason_phrase, 60)}; check the URL "
            "or the server",
        )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ImageLoadError(
            label, f"the server sent a {shown(encoding, 30)}-encoded body though asked not to"
        )
    media = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media and not (media.startswith("image/") or media.endswith("octet-stream")):
        raise ImageLoadError(label, f"the server sent {shown(media, 60)}, not an image")
    limit = policy.byte_limit
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
                f"the download took longer than timeout={policy.timeout:g} s; raise timeout "
                "if the server is slow",
            )
    return b"".join(chunks)


# -- hosts and addresses --------------------------------------------------------------------


def _tls_hint(error: str, host: str) -> str:
    text = error.lower()
    if "hostname mismatch" in text or "doesn't match" in text:
        return f"; the server's certificate does not cover {host}: fix the URL or the server"
    if "certificate" in text:
        return "; if the server uses an internal CA, set ca_bundle to its PEM file"
    return ""


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
        raise ValueError(f"{shown(name, 80)!r} is not a valid host name")
    return ascii_name


def _parent(host: str) -> str:
    return host.split(".", 1)[1] if "." in host and not _is_ip(host) else host
