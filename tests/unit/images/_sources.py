"""Test images and helpers shared by the image source tests."""

from __future__ import annotations

import base64
import io
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file types and symlinks")


def png_bytes(width: int = 24, height: int = 16, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


PNG = png_bytes()

B64 = base64.b64encode(PNG).decode("ascii")


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
