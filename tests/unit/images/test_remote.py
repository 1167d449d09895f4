"""URL image sources under ImageSourcePolicy, checked without any network.

Schemes, host allow-lists, internal addresses (literal, by name, in IPv6 forms), a slow
resolver and credentials in messages: every URL here is refused before a connection.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from qdrant_xai import ImageLoadError, SourceNotAllowedError
from qdrant_xai.images.policy import ImageSourcePolicy


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
