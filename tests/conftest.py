"""Shared fixtures: Qdrant backends and tiny CLIP models built offline.

Integration tests take the ``client`` fixture, which runs each test on every backend that
exists: embedded ``:memory:`` and embedded on-disk always; a server when ``QDRANT_URL`` is
set; the compose file's server through pytest-docker when a Docker engine answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# A run started in the background of a non-interactive shell (`pytest &`, `nohup ... &`)
# inherits SIGINT ignored, and the CLI rightly leaves an ignored SIGINT ignored (nohup's
# meaning), so the tests that stop a command with SIGINT would see nothing happen. They test
# a stop from a terminal: give the run Python's own SIGINT handler back (children then start
# with SIGINT at its default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder
from qdrant_xai.testing import build_tiny_clip

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker" / "docker-compose.yml"

BACKENDS = ["memory", "local"]
if os.environ.get("QDRANT_URL"):
    BACKENDS.append("server")
BACKENDS.append(pytest.param("docker", marks=pytest.mark.docker))


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_qdrant_url(request: pytest.FixtureRequest) -> str:
    if not docker_engine_answers():
        pytest.skip("no Docker engine answers (`docker info` failed); the docker backend needs one")
    import httpx

    services = request.getfixturevalue("docker_services")
    ip = request.getfixturevalue("docker_ip")
    url = f"http://{ip}:{services.port_for('qdrant', 6333)}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    services.wait_until_responsive(check=ready, timeout=60.0, pause=0.5)
    return url


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QdrantClient]:
    """A Qdrant client on each available backend."""
    if request.param == "memory":
        qdrant = QdrantClient(":memory:")
    elif request.param == "local":
        qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    elif request.param == "server":
        qdrant = QdrantClient(
            url=os.environ["QDRANT_URL"], api_key=os.environ.get("QDRANT_API_KEY")
        )
    else:
        qdrant = QdrantClient(url=request.getfixturevalue("docker_qdrant_url"))
    yield qdrant
    qdrant.close()


@pytest.fixture
def collection_name() -> str:
    """A fresh collection name (server backends are shared between tests)."""
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny CLIP (4x4 grid, 16-d) saved with save_pretrained."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path) -> ClipEncoder:
    return ClipEncoder.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def shapes_encoder() -> ClipEncoder:
    """The committed small CLIP trained on the shapes world."""
    return ClipEncoder.from_pretrained("shapes")
