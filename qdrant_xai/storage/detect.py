"""Collections whose layout is not given: detect it, resolve it, and report what they hold.

Use::

    from qdrant_xai.storage.detect import inspect_collection, resolve_layout

    layout = resolve_layout(client, "docs", "auto")      # detected, vectors resolved
    layout.name                                           # "langchain", "llamaindex", ...
    print(inspect_collection(client, "docs", encoder=encoder, sources=policy))

Detection reads the collection's vectors and the payloads of a few points (without
qdrant-xai's feature maps) and names the writer by the keys it leaves (see
:mod:`qdrant_xai.storage.writers`). Every entry point takes ``layout="auto"`` (or ``None``)
to detect it, a preset name, or a :class:`~qdrant_xai.storage.layouts.CollectionLayout`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from qdrant_client import AsyncQdrantClient, QdrantClient, models

from qdrant_xai.errors import CollectionError
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.candidates import match_candidates
from qdrant_xai.storage.layouts import (
    AUTO,
    CollectionLayout,
    LayoutSpec,
    layout_named,
)
from qdrant_xai.storage.report import CollectionReport, VectorInfo
from qdrant_xai.storage.schema import (
    PayloadKeys,
    arequire_collection,
    require_collection,
)
from qdrant_xai.storage.sidecar import Sidecar
from qdrant_xai.storage.survey import Survey
from qdrant_xai.storage.writers import UNKNOWN, detected_layout, unknown_layout_error

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = [
    "DEFAULT_SAMPLE",
    "CollectionReport",
    "adetect_layout",
    "aresolve_collection",
    "aresolve_layout",
    "detect_layout",
    "inspect_collection",
    "resolve_collection",
    "resolve_layout",
]

#: points read to detect a layout, and by default to inspect a collection
DEFAULT_SAMPLE = 32
_BATCH = 16
Kind = Literal["image", "text"]


def _light() -> models.PayloadSelectorExclude:
    return models.PayloadSelectorExclude(exclude=list(PayloadKeys.HEAVY))


def _sample_args(collection_name: str, limit: int, with_vectors: bool) -> dict[str, Any]:
    return {
        "what": f"reading a sample of collection {collection_name!r}",
        "limit": limit,
        "with_payload": _light(),
        "with_vectors": with_vectors,
    }


# -- detection ----------------------------------------------------------------------------


def _detect(
    client: QdrantClient, collection_name: str, retry: RetryPolicy
) -> tuple[models.CollectionInfo, CollectionLayout]:
    info = require_collection(client, collection_name, retry=retry)
    records, _ = retry.call(
        client.scroll,
        collection_name,
        client=client,
        **_sample_args(collection_name, DEFAULT_SAMPLE, False),
    )
    payloads = [r.payload or {} for r in records]
    return info, detected_layout(info, payloads, collection_name)


async def _adetect(
    client: AsyncQdrantClient, collection_name: str, retry: RetryPolicy
) -> tuple[models.CollectionInfo, CollectionLayout]:
    info = await arequire_collection(client, collection_name, retry=retry)
    records, _ = await retry.acall(
        client.scroll, collection_name, **_sample_args(collection_name, DEFAULT_SAMPLE, False)
    )
    payloads = [r.payload or {} for r in records]
    return info, detected_layout(info, payloads, collection_name)


def detect_layout(
    client: QdrantClient, collection_name: str, *, retry: RetryPolicy | None = None
) -> CollectionLayout:
    """The layout of the tool that wrote the collection, named after it (``"qdrant-xai"``,
    ``"langchain"``, ``"llamaindex"``, ``"fastembed"``, ``"qdrant-tutorial"``, or
    ``"unknown"``, whose ``notes`` say what was seen), from its vectors and a sample of its
    points; vectors resolved where the collection leaves no doubt.

    Raises:
        CollectionError: the collection does not exist.
        QdrantUnavailableError: Qdrant did not answer through ``retry``.
    """
    return _detect(client, collection_name, retry or RetryPolicy())[1]


async def adetect_layout(
    client: AsyncQdrantClient, collection_name: str, *, retry: RetryPolicy | None = None
) -> CollectionLayout:
    """Async :func:`detect_layout`, for an ``AsyncQdrantClient``."""
    return (await _adetect(client, collection_name, retry or RetryPolicy()))[1]


def resolve_layout(
    client: QdrantClient,
    collection_name: str,
    layout: LayoutSpec = AUTO,
    *,
    retry: RetryPolicy | None = None,
) -> CollectionLayout:
    """The layout to read the collection with, its vectors resolved: detected for
    ``"auto"`` or ``None``, else the preset or layout given.

    Raises:
        CollectionError: the collection does not exist; its writer was not recognised (the
            message says how to pass a layout); or it has no vector the layout can use.
        ValueError: an unknown preset name.
        QdrantUnavailableError: Qdrant did not answer through ``retry``.
    """
    return resolve_collection(client, collection_name, layout, retry=retry)[1]


async def aresolve_layout(
    client: AsyncQdrantClient,
    collection_name: str,
    layout: LayoutSpec = AUTO,
    *,
    retry: RetryPolicy | None = None,
) -> CollectionLayout:
    """Async :func:`resolve_layout`, for an ``AsyncQdrantClient``."""
    return (await aresolve_collection(client, collection_name, layout, retry=retry))[1]


def resolve_collection(
    client: QdrantClient,
    collection_name: str,
    layout: LayoutSpec = AUTO,
    *,
    retry: RetryPolicy | None = None,
) -> tuple[models.CollectionInfo, CollectionLayout]:
    """The collection's info and :func:`resolve_layout`'s layout, read once together."""
    retry = retry or RetryPolicy()
    if layout is None or layout == AUTO:
        info, detected = _detect(client, collection_name, retry)
        return info, _resolved(detected, info, collection_name)
    chosen = layout_named(layout)
    info = require_collection(client, collection_name, retry=retry)
    return info, chosen.resolved_with(info, collection_name)


async def aresolve_collection(
    client: AsyncQdrantClient,
    collection_name: str,
    layout: LayoutSpec = AUTO,
    *,
    retry: RetryPolicy | None = None,
) -> tuple[models.CollectionInfo, CollectionLayout]:
    """Async :func:`resolve_collection`, for an ``AsyncQdrantClient``."""
    retry = retry or RetryPolicy()
    if layout is None or layout == AUTO:
        info, detected = await _adetect(client, collection_name, retry)
        return info, _resolved(detected, info, collection_name)
    chosen = layout_named(layout)
    info = await arequire_collection(client, collection_name, retry=retry)
    return info, chosen.resolved_with(info, collection_name)


def _resolved(
    detected: CollectionLayout, info: models.CollectionInfo, collection_name: str
) -> CollectionLayout:
    if detected.name == UNKNOWN:
        raise unknown_layout_error(collection_name, detected)
    return detected.resolved_with(info, collection_name)


# -- inspection ---------------------------------------------------------------------------


def inspect_collection(
    client: QdrantClient,
    collection_name: str,
    *,
    encoder: ClipEncoder | None = None,
    sources: ImageSourcePolicy | None = None,
    sidecar: str | Literal[False] | None = None,
    sample: int = DEFAULT_SAMPLE,
    layout: LayoutSpec = AUTO,
    retry: RetryPolicy | None = None,
    candidates: Sequence[ClipEncoder | str] = (),
    load_candidate: Callable[[str], ClipEncoder] | None = None,
) -> CollectionReport:
    """What a collection holds and what of it can be explained, from ``sample`` points.

    Reads nothing but the collection's info, a sample of its points (vectors included, the
    feature maps left out), the same points in the sidecar if there is one, and the images
    those points name (through ``sources``); writes nothing.

    Args:
        encoder: the model to compare stored vectors with (per modality); None: not compared.
        sources: which images may be read (default: base64 and data URIs only, no files).
        sidecar: the feature sidecar's name; None: ``f"{collection_name}__xai"`` if it
            exists; False: none.
        sample: points to look at.
        layout: ``"auto"`` (detect), a preset name, or a layout.
        candidates: models that may have written the vectors (encoders, or hub ids and
            folders loaded one at a time with ``load_candidate``, default
            ``ClipEncoder.from_pretrained``): each re-encodes the sample and the report
            says which reproduces the stored vectors (:mod:`.candidates`).

    Raises:
        CollectionError: the collection does not exist.
        ValueError: ``sample`` below 1, or an unknown preset name.
        QdrantUnavailableError: Qdrant did not answer through ``retry``.
    """
    if sample < 1:
        raise ValueError(f"sample must be at least 1, not {sample!r}")
    retry = retry or RetryPolicy()
    info = require_collection(client, collection_name, retry=retry)
    records, _ = retry.call(
        client.scroll, collection_name, client=client, **_sample_args(collection_name, sample, True)
    )
    detected = layout is None or layout == AUTO
    chosen = (
        detected_layout(info, [r.payload or {} for r in records], collection_name)
        if detected
        else layout_named(layout)  # type: ignore[arg-type]
    )
    notes: list[str] = []
    resolved = chosen
    if chosen.name == UNKNOWN:
        notes.append(str(unknown_layout_error(collection_name, chosen)))
    else:
        try:
            resolved = chosen.resolved_with(info, collection_name)
        except CollectionError as exc:
            notes.append(str(exc))
    sidecar_name, features = _sidecar(client, collection_name, sidecar, records, retry)
    survey = Survey(resolved, sources or ImageSourcePolicy(), encoder)
    for record in records:
        survey.add(record, features.get(str(record.id)))
    survey.compare(info, collection_name)
    matches = match_candidates(
        candidates,
        records,
        layout=resolved,
        info=info,
        collection_name=collection_name,
        sources=sources or ImageSourcePolicy(),
        load=load_candidate,
    )
    vectors, sparse = _vectors(info)
    image_hits, text_hits = survey.explainable()
    return CollectionReport(
        collection_name=collection_name,
        writer=chosen.name,
        detected=detected,
        layout=resolved,
        points=info.points_count,
        vectors=vectors,
        sparse_vectors=sparse,
        sampled=len(records),
        images=survey.counts["image"],
        texts=survey.counts["text"],
        both=survey.counts["both"],
        neither=survey.counts["neither"],
        image_keys=tuple(survey.image_keys.most_common()),
        text_keys=tuple(survey.text_keys.most_common()),
        not_images=tuple(
            (key, count, survey.examples[key]) for key, count in survey.not_images.most_common()
        ),
        model=encoder.model_id if encoder is not None else None,
        image_agreement=survey.agreement("image"),
        text_agreement=survey.agreement("text"),
        image_hits=image_hits,
        text_hits=text_hits,
        sidecar=sidecar_name,
        candidates=matches,
        notes=tuple(notes),
    )


def _vectors(info: models.CollectionInfo) -> tuple[tuple[VectorInfo, ...], tuple[str, ...]]:
    params = info.config.params
    vectors: Any = params.vectors
    named = vectors if isinstance(vectors, dict) else {"": vectors} if vectors else {}
    dense = tuple(
        VectorInfo(
            name=name,
            size=getattr(p, "size", None),
            distance=getattr(getattr(p, "distance", None), "value", None),
            multivector=getattr(p, "multivector_config", None) is not None,
        )
        for name, p in sorted(named.items())
    )
    return dense, tuple(sorted(params.sparse_vectors or {}))


def _sidecar(
    client: QdrantClient,
    collection_name: str,
    sidecar: str | Literal[False] | None,
    records: Sequence[models.Record],
    retry: RetryPolicy,
) -> tuple[str | None, dict[str, dict[str, dict[str, Any]]]]:
    """The sidecar's name when it exists, and its entries for ``records`` by id and kind."""
    if sidecar is False:
        return None, {}
    store = Sidecar(client, collection_name, name=sidecar or None, retry=retry)
    if not store.exists():
        return None, {}
    return store.name, store.read([r.id for r in records])
