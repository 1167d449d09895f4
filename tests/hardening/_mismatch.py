"""Features or vectors from another model are caught before any heatmap is drawn.

Three tiny CLIPs: ``A`` (the session's ``tiny_encoder``), ``B`` (same architecture and
dimension, other weights) and ``W`` (a 24-d joint space). Collections written by one are
explained with another through the Python API, the CLI and the LangChain retriever; each
attempt must raise :class:`ModelMismatchError` (or :class:`SchemaMismatchError` for a
dimension) while the heatmap method, a counting subclass of the decomposition, has not been
called once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_qdrant_xai import QdrantXaiRetriever
from qdrant_client import QdrantClient, models

from qdrant_xai import (
    ClipEncoder,
    Explainer,
    Indexer,
    ModelMismatchError,
    PayloadKeys,
    SchemaMismatchError,
    Searcher,
    check_vectors,
)
from qdrant_xai.cli import main
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.explain import HEATMAP_METHODS
from qdrant_xai.explain.base import ImageEvidence, register_heatmap_method
from qdrant_xai.explain.heatmaps.decomposition import DecompositionHeatmap
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.testing import build_tiny_clip, write_tutorial_collection

pytestmark = pytest.mark.hardening

CAUGHT = (ModelMismatchError, SchemaMismatchError)
COUNTING = "hardening-counting"
TEXT = "a red circle"


class CountingDecomposition(DecompositionHeatmap):
    """The decomposition heatmap, counting how often it is drawn."""

    name = COUNTING
    drawn = 0

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        type(self).drawn += 1
        return super().heatmaps(encoder, evidence, queries)


@pytest.fixture(scope="module", autouse=True)
def counting_method() -> Iterator[None]:
    """Selectable by name (the CLI's --method) for this module only."""
    register_heatmap_method(CountingDecomposition)
    yield
    HEATMAP_METHODS.pop(COUNTING, None)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mismatch-scenes")
    write_scene_folder(folder, 6, seed=21, size=64)
    return folder


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mismatch-models")
    return {
        "B": build_tiny_clip(root / "B", seed=5),
        "W": build_tiny_clip(root / "W", projection_dim=24, seed=6),
    }


@pytest.fixture(scope="module")
def other(models_dir: dict[str, Path]) -> ClipEncoder:
    """Same dimension as ``tiny_encoder``, other weights."""
    return ClipEncoder.from_pretrained(models_dir["B"])


@pytest.fixture(scope="module")
def wide(models_dir: dict[str, Path]) -> ClipEncoder:
    """Another dimension (24)."""
    return ClipEncoder.from_pretrained(models_dir["W"])


def _captions(folder: Path) -> dict[str, str]:
    lines = (folder / "captions.csv").read_text(encoding="utf-8").splitlines()[1:]
    out = {}
    for line in lines:
        name, caption = line.split(",", 1)
        out[str(folder / name)] = caption.strip('"')
    return out


def _tutorial(client: QdrantClient, name: str, encoder: ClipEncoder, folder: Path) -> None:
    """Qdrant's multimodal tutorial layout written with ``encoder``: no fingerprints."""
    write_tutorial_collection(client, name, encoder, _captions(folder))


def _langchain(client: QdrantClient, name: str, encoder: ClipEncoder, folder: Path) -> None:
    """langchain-qdrant's layout written with ``encoder``: one unnamed vector."""
    captions = _captions(folder)
    client.create_collection(
        name, vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
    )
    paths = list(captions)
    images = encoder.embed_images([Path(p) for p in paths])
    texts = encoder.embed_texts(list(captions.values()))
    client.upsert(
        name,
        points=[
            models.PointStruct(
                id=i,
                vector=images[i].tolist(),
                payload={"page_content": Path(p).name, "metadata": {"source": p}},
            )
            for i, p in enumerate(paths)
        ]
        + [
            models.PointStruct(
                id=100 + i,
                vector=texts[i].tolist(),
                payload={"page_content": caption, "metadata": {}},
            )
            for i, caption in enumerate(captions.values())
        ],
    )


@pytest.fixture(scope="module")
def world(
    tiny_encoder: ClipEncoder, other: ClipEncoder, wide: ClipEncoder, scenes: Path
) -> Iterator[QdrantClient]:
    """Collections: qdrant-xai ones by A (intact, forged, fingerprint-less), foreign ones
    by B and W."""
    client = QdrantClient(":memory:")
    for name in ("by_a", "forged", "unsigned"):
        Indexer(client, tiny_encoder, collection_name=name).index_folder(
            scenes, captions=scenes / "captions.csv", progress=False
        )
    # a payload fingerprint claiming model B over features A computed
    client.set_payload(
        "forged", payload={PayloadKeys.FINGERPRINT: other.fingerprint.key}, points=models.Filter()
    )
    # fingerprints removed: only the features (image points) or the vectors (text points)
    # still say which model wrote them
    client.delete_payload("unsigned", keys=[PayloadKeys.FINGERPRINT], points=models.Filter())
    _tutorial(client, "tutorial_by_b", other, scenes)
    _tutorial(client, "tutorial_by_w", wide, scenes)
    _langchain(client, "langchain_by_b", other, scenes)
    yield client
    client.close()


def _hits(
    client: QdrantClient,
    encoder: ClipEncoder,
    collection: str,
    query: Any,
    target: str,
    layout: str = "qdrant-xai",
) -> list[models.ScoredPoint]:
    searcher = Searcher(client, encoder, collection_name=collection, layout=layout)
    hits = searcher.search(query, hit_kind=target, limit=3)  # type: ignore[arg-type]
    assert hits
    return hits


def _attempt(figures: Any, kind: str, run: Callable[[], object]) -> str:
    """Runs one mismatch; returns what went wrong ('' when caught before drawing)."""
    CountingDecomposition.drawn = 0
    figures.add("mismatch", "mismatch attempts", 1)
    try:
        run()
    except CAUGHT:
        if CountingDecomposition.drawn:
            return f"{kind}: caught only after {CountingDecomposition.drawn} heatmap calls"
        figures.add("mismatch", "caught before any heatmap", 1)
        return ""
    except Exception as exc:  # an untyped error is a failure too
        return f"{kind}: {type(exc).__name__}: {exc}"
    return f"{kind}: not caught ({CountingDecomposition.drawn} heatmap calls)"


def test_python_api_catches_every_mismatch_before_drawing(
    world: QdrantClient,
    tiny_encoder: ClipEncoder,
    other: ClipEncoder,
    wide: ClipEncoder,
    scenes: Path,
    figures: Any,
) -> None:
    a, image = tiny_encoder, scenes / "scene_0002.png"
    roots = [scenes]

    def explain(
        encoder: ClipEncoder,
        collection: str,
        query: Any,
        hits: list[Any],
        layout: str = "qdrant-xai",
        **kw: Any,
    ) -> Any:
        return Explainer(
            encoder,
            world,
            collection_name=collection,
            layout=layout,
            image_roots=roots,
            heatmap_method=COUNTING,
        ).explain(query, hits, **kw)

    by_a_images = _hits(world, a, "by_a", TEXT, "image")
    by_a_texts = _hits(world, a, "by_a", image, "text")
    cases: dict[str, Callable[[], object]] = {
        "image points by another model (same dimension)": lambda: explain(
            other, "by_a", TEXT, by_a_images
        ),
        "text points by another model (same dimension), image query": lambda: explain(
            other, "by_a", image, by_a_texts
        ),
        "image points by a model of another dimension": lambda: explain(
            wide, "by_a", TEXT, by_a_images
        ),
        "text points by a model of another dimension": lambda: explain(
            wide, "by_a", image, by_a_texts
        ),
        "image->image hits by another model": lambda: explain(
            other, "by_a", image, _hits(world, a, "by_a", image, "image")
        ),
        "payload fingerprint forged to this model, features by another": lambda: explain(
            other, "forged", TEXT, _hits(world, a, "forged", TEXT, "image")
        ),
        "image points without fingerprint, features by another model": lambda: explain(
            other, "unsigned", TEXT, _hits(world, a, "unsigned", TEXT, "image")
        ),
        "text points without fingerprint, vectors by another model": lambda: explain(
            other, "unsigned", image, _hits(world, a, "unsigned", image, "text")
        ),
        "text->text hits without fingerprint, vectors by another model": lambda: explain(
            other, "unsigned", TEXT, _hits(world, a, "unsigned", TEXT, "text")
        ),
        "foreign layout (tutorial) image vectors by another model": lambda: explain(
            a,
            "tutorial_by_b",
            TEXT,
            _hits(world, other, "tutorial_by_b", TEXT, "image", "qdrant-tutorial"),
            layout="qdrant-tutorial",
            hit_kind="image",
        ),
        "foreign layout (tutorial) text vectors by another model": lambda: explain(
            a,
            "tutorial_by_b",
            image,
            _hits(world, other, "tutorial_by_b", image, "text", "qdrant-tutorial"),
            layout="qdrant-tutorial",
            hit_kind="text",
        ),
        "foreign layout (langchain) vectors by another model": lambda: explain(
            a,
            "langchain_by_b",
            TEXT,
            _hits(world, other, "langchain_by_b", TEXT, "image", "langchain"),
            layout="langchain",
        ),
        "foreign layout (tutorial) vectors of another dimension": lambda: explain(
            a,
            "tutorial_by_w",
            TEXT,
            _hits(world, wide, "tutorial_by_w", TEXT, "image", "qdrant-tutorial"),
            layout="qdrant-tutorial",
            hit_kind="image",
        ),
        "offline explainer, hit vectors of another dimension": lambda: Explainer(
            a, None, image_roots=roots, layout="qdrant-tutorial", heatmap_method=COUNTING
        ).explain(TEXT, _with_vectors(world, wide, "tutorial_by_w"), hit_kind="image"),
        "check_vectors: foreign vectors by another model": lambda: check_vectors(
            world,
            "tutorial_by_b",
            a,
            layout="qdrant-tutorial",
            sources=ImageSourcePolicy.from_roots(roots),
            sample=4,
        ),
        "check_vectors: foreign vectors of another dimension": lambda: check_vectors(
            world,
            "tutorial_by_w",
            a,
            layout="qdrant-tutorial",
            sources=ImageSourcePolicy.from_roots(roots),
        ),
    }
    failures = [f for kind, run in cases.items() if (f := _attempt(figures, kind, run))]
    figures.add("mismatch", "Python API kinds tried", len(cases))
    # with the right model the same calls draw their heatmaps (no false alarm, and the
    # counter does count)
    CountingDecomposition.drawn = 0
    explain(a, "by_a", TEXT, by_a_images)
    explain(a, "by_a", image, by_a_texts)
    explain(
        other,
        "tutorial_by_b",
        TEXT,
        _hits(world, other, "tutorial_by_b", TEXT, "image", "qdrant-tutorial"),
        layout="qdrant-tutorial",
        hit_kind="image",
    )
    explain(
        other,
        "langchain_by_b",
        image,
        _hits(world, other, "langchain_by_b", image, "text", "langchain"),
        layout="langchain",
        hit_kind="text",
    )
    Explainer(
        wide, None, image_roots=roots, layout="qdrant-tutorial", heatmap_method=COUNTING
    ).explain(TEXT, _with_vectors(world, wide, "tutorial_by_w"), hit_kind="image")
    assert CountingDecomposition.drawn == 5
    assert not failures, "\n".join(failures)


def _with_vectors(client: QdrantClient, encoder: ClipEncoder, collection: str) -> list[Any]:
    """Image hits of a tutorial-layout collection carrying their vectors and payloads."""
    query = encoder.embed_texts([TEXT])[0].tolist()
    return client.query_points(
        collection, query=query, using="image", limit=2, with_payload=True, with_vectors=True
    ).points


@pytest.fixture(scope="module")
def stored(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder: ClipEncoder, scenes: Path
) -> tuple[Path, str, str]:
    """An embedded on-disk collection by A (closed again, for the CLI): path, one image
    point id, one text point id."""
    path = tmp_path_factory.mktemp("mismatch-cli") / "qdrant"
    client = QdrantClient(path=str(path))
    Indexer(client, tiny_encoder, collection_name="cli").index_folder(
        scenes, captions=scenes / "captions.csv", progress=False
    )
    points, _ = client.scroll("cli", limit=100, with_payload=[PayloadKeys.KIND])
    client.close()
    kinds = {str(p.id): (p.payload or {}).get(PayloadKeys.KIND) for p in points}
    image_id = next(i for i, k in kinds.items() if k == "image")
    text_id = next(i for i, k in kinds.items() if k == "text")
    return path, image_id, text_id


def test_cli_refuses_another_model_with_a_message_and_exit_status(
    stored: tuple[Path, str, str],
    models_dir: dict[str, Path],
    scenes: Path,
    figures: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, image_id, text_id = stored
    image = str(scenes / "scene_0002.png")
    b, w = str(models_dir["B"]), str(models_dir["W"])
    cases = {
        "explain an image point with another model": [
            "explain",
            image_id,
            "--text",
            TEXT,
            "--model",
            b,
        ],
        "explain a text point with another model": [
            "explain",
            text_id,
            "--image",
            image,
            "--model",
            b,
        ],
        "explain an image point with another dimension": [
            "explain",
            image_id,
            "--text",
            TEXT,
            "--model",
            w,
        ],
        "explain a text point with another dimension": [
            "explain",
            text_id,
            "--image",
            image,
            "--model",
            w,
        ],
        "search --explain with another model": ["search", TEXT, "--explain", "--model", b],
        "search --explain with another dimension": [
            "search",
            "--image",
            image,
            "--explain",
            "--model",
            w,
        ],
    }
    common = ["--path", str(path), "--collection", "cli", "--method", COUNTING]
    failures = []
    for kind, args in cases.items():
        CountingDecomposition.drawn = 0
        status = main([*args, *common])
        err = capsys.readouterr().err
        ok = (
            status == 1
            and err.startswith("error: ")
            and "Traceback" not in err
            and ("another model" in err or "dimension" in err)
            and CountingDecomposition.drawn == 0
        )
        if ok:
            figures.add("mismatch", "CLI: refused with exit status 1 before drawing", 1)
        else:
            failures.append(f"{kind}: exit {status}, drawn {CountingDecomposition.drawn}: {err}")
    figures.add("mismatch", "CLI kinds tried", len(cases))
    # the right model explains the same point (exit 0, one heatmap drawn)
    CountingDecomposition.drawn = 0
    assert main(["explain", image_id, "--text", TEXT, *common]) == 0
    capsys.readouterr()
    assert CountingDecomposition.drawn == 1
    assert not failures, "\n".join(failures)


def test_langchain_retriever_refuses_another_model_before_drawing(
    world: QdrantClient,
    tiny_encoder: ClipEncoder,
    other: ClipEncoder,
    wide: ClipEncoder,
    scenes: Path,
    figures: Any,
) -> None:
    def retriever(encoder: ClipEncoder, collection: str, **kw: Any) -> QdrantXaiRetriever:
        return QdrantXaiRetriever(
            client=world,
            encoder=encoder,
            collection_name=collection,
            heatmap_method=COUNTING,
            image_roots=[scenes],
            **kw,
        )

    image = str(scenes / "scene_0002.png")
    ids = [hit.id for hit in _hits(world, tiny_encoder, "by_a", TEXT, "image")]
    cases: dict[str, Callable[[], object]] = {
        "retriever: points by another model": lambda: retriever(other, "by_a").invoke(TEXT),
        "retriever: points by another dimension": lambda: retriever(wide, "by_a").invoke(TEXT),
        "retriever, image query: text points by another model": lambda: retriever(
            other, "by_a", query_type="image"
        ).invoke(image),
        "retriever: unsigned text points by another model": lambda: retriever(
            other, "unsigned", query_type="image"
        ).invoke(image),
        "explain_points: points by another model": lambda: retriever(other, "by_a").explain_points(
            ids, TEXT
        ),
    }
    failures = [f for kind, run in cases.items() if (f := _attempt(figures, kind, run))]
    figures.add("mismatch", "LangChain kinds tried", len(cases))
    assert not failures, "\n".join(failures)


def test_mcp_backend_refuses_another_model_before_drawing(
    world: QdrantClient,
    tiny_encoder: ClipEncoder,
    other: ClipEncoder,
    wide: ClipEncoder,
    scenes: Path,
    figures: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("mcp.server.mcpserver", reason="needs the mcp extra (SDK 2.x)")
    from qdrant_xai_mcp import ServerSettings
    from qdrant_xai_mcp.server import XaiBackend

    # the tools use the default method: count the decomposition itself
    drawing = DecompositionHeatmap.heatmaps

    def counted(self: Any, *args: Any) -> np.ndarray:
        CountingDecomposition.drawn += 1
        return drawing(self, *args)

    monkeypatch.setattr(DecompositionHeatmap, "heatmaps", counted)

    def backend(encoder: ClipEncoder, collection: str = "by_a") -> XaiBackend:
        settings = ServerSettings(collection_name=collection, image_roots=(scenes,))
        return XaiBackend(settings, client=world, encoder=encoder)

    image = str(scenes / "scene_0002.png")
    point = _hits(world, tiny_encoder, "by_a", TEXT, "image")[0].id
    cases: dict[str, Callable[[], object]] = {
        "MCP search_images: points by another model": lambda: backend(other).search_images(TEXT),
        "MCP search_texts: points by another model": lambda: backend(other).search_texts(
            image_path=image
        ),
        "MCP search_images: another dimension": lambda: backend(wide).search_images(TEXT),
        "MCP explain_hit: a point by another model": lambda: backend(other).explain_hit(
            point, query_text=TEXT, method=COUNTING
        ),
        "MCP search_texts: unsigned text points by another model": lambda: backend(
            other, "unsigned"
        ).search_texts(image_path=image),
    }
    failures = [f for kind, run in cases.items() if (f := _attempt(figures, kind, run))]
    figures.add("mismatch", "MCP kinds tried", len(cases))
    CountingDecomposition.drawn = 0
    backend(tiny_encoder).search_images(TEXT)  # the right model draws
    assert CountingDecomposition.drawn == 1
    assert not failures, "\n".join(failures)
