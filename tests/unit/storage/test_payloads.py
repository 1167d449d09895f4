"""Whether a stored point is current for a model, and what kind a point is."""

from __future__ import annotations

import pytest

from qdrant_xai.storage.layouts import LAYOUTS
from qdrant_xai.storage.payloads import is_current
from qdrant_xai.storage.schema import PayloadKeys

KEY = "abc:224x224:7x7:512"


@pytest.mark.parametrize(
    ("payload", "profile", "image", "current"),
    [
        ({PayloadKeys.FINGERPRINT: KEY}, "standard", True, True),
        ({PayloadKeys.FINGERPRINT: "other"}, "standard", True, False),
        ({}, "standard", False, False),
        ({PayloadKeys.FINGERPRINT: KEY, PayloadKeys.PROFILE: "standard"}, "full", True, False),
        ({PayloadKeys.FINGERPRINT: KEY, PayloadKeys.PROFILE: "full"}, "full", True, True),
        ({PayloadKeys.FINGERPRINT: KEY, PayloadKeys.PROFILE: "full"}, "standard", True, True),
        ({PayloadKeys.FINGERPRINT: KEY}, "full", False, True),  # texts have no profile
    ],
)
def test_is_current(payload: dict[str, str], profile: str, image: bool, current: bool) -> None:
    assert is_current(payload, KEY, profile, image=image) is current  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("layout", "payload", "kind"),
    [
        ("qdrant-xai", {PayloadKeys.KIND: "text", PayloadKeys.SOURCE: "a.png"}, "text"),
        ("qdrant-xai", {PayloadKeys.SOURCE: "a.png"}, "image"),
        ("qdrant-xai", {PayloadKeys.TEXT: "a cat"}, "text"),
        ("qdrant-xai", {}, "image"),
        ("langchain", {"page_content": "a cat", "metadata": {}}, "text"),
        ("langchain", {"page_content": "caption", "metadata": {"source": "a.png"}}, "image"),
        ("qdrant-tutorial", {"image": "a.png", "caption": "a cat"}, "image"),
    ],
)
def test_kind_of_reads_the_recorded_kind_then_the_payload(
    layout: str, payload: dict[str, object], kind: str
) -> None:
    assert LAYOUTS[layout].kind_of(payload) == kind


def test_kind_of_falls_back_to_the_default_for_points_holding_both() -> None:
    both = {"image": "a.png", "caption": "a cat"}
    assert LAYOUTS["qdrant-tutorial"].kind_of(both, default="text") == "text"
