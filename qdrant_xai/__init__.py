"""qdrant-xai: explainable CLIP retrieval for Qdrant.

Index images and captions with CLIP vectors plus compact explainable features, search them,
and explain every hit (a heatmap over the image, word attributions of the text) without
changing the hits' ids, scores or order.

    from qdrant_client import QdrantClient
    from qdrant_xai import ClipEncoder, Explainer, Indexer, Searcher

    client = QdrantClient(path="./qdrant_data")
    encoder = ClipEncoder.from_pretrained("openai/clip-vit-base-patch32")
    Indexer(client, encoder, collection_name="photos").index_folder("photos/")
    hits = Searcher(client, encoder, collection_name="photos").search_images("a red car")
    explanations = Explainer(encoder, client, collection_name="photos").explain("a red car", hits)

The package is laid out by the way data flows (``docs/architecture.md``): ``images`` (bytes
to RGB, under a source policy) -> ``encoding`` (CLIP forward, per-patch and per-word
contributions, fingerprints) -> ``storage`` (schema, codec, payloads, layouts, indexer,
backfill) -> ``search`` -> ``explain`` (heatmap and word methods, grounding, rationales,
the explainer) -> ``eval`` (faithfulness and retrieval metrics) -> ``render`` -> ``cli``;
``errors``, ``connection`` and ``retry`` serve them all. Names are imported on first use,
so importing the package does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_xai._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_MODEL": "qdrant_xai.encoding.checkpoints",
    "IMAGE_VECTOR": "qdrant_xai.storage.schema",
    "LAYOUTS": "qdrant_xai.storage.layouts",
    "TEXT_VECTOR": "qdrant_xai.storage.schema",
    "BackfillSummary": "qdrant_xai.storage.backfill",
    "Backfiller": "qdrant_xai.storage.backfill",
    "ClipEncoder": "qdrant_xai.encoding.encoder",
    "CollectionError": "qdrant_xai.errors",
    "CollectionLayout": "qdrant_xai.storage.layouts",
    "Explainer": "qdrant_xai.explain.explainer",
    "Explanation": "qdrant_xai.explain.results",
    "FeatureCodecError": "qdrant_xai.errors",
    "FeaturesMissingError": "qdrant_xai.errors",
    "ImageFeatures": "qdrant_xai.encoding.encoder",
    "DeviceUnavailableError": "qdrant_xai.errors",
    "DiskFullError": "qdrant_xai.errors",
    "InputTooLargeError": "qdrant_xai.errors",
    "StaleFeaturesError": "qdrant_xai.errors",
    "ImageLimits": "qdrant_xai.images.load",
    "ImageLoadError": "qdrant_xai.errors",
    "ImageRecord": "qdrant_xai.storage.indexer",
    "ImageSourcePolicy": "qdrant_xai.images.policy",
    "IndexSummary": "qdrant_xai.storage.indexer",
    "Indexer": "qdrant_xai.storage.indexer",
    "LoadedImage": "qdrant_xai.images.load",
    "ModelFingerprint": "qdrant_xai.encoding.fingerprint",
    "ModelLoadError": "qdrant_xai.errors",
    "ModelMismatchError": "qdrant_xai.errors",
    "PayloadFeatureCodec": "qdrant_xai.storage.codec",
    "PayloadKeys": "qdrant_xai.storage.schema",
    "QdrantUnavailableError": "qdrant_xai.errors",
    "QdrantXaiError": "qdrant_xai.errors",
    "RetryPolicy": "qdrant_xai.retry",
    "SchemaMismatchError": "qdrant_xai.errors",
    "Searcher": "qdrant_xai.search",
    "SourceNotAllowedError": "qdrant_xai.errors",
    "StorageLockedError": "qdrant_xai.errors",
    "TextFeatures": "qdrant_xai.encoding.encoder",
    "TextLimits": "qdrant_xai.encoding.text_limits",
    "VectorCheck": "qdrant_xai.storage.vector_check",
    "Word": "qdrant_xai.encoding.words",
    "WordAttribution": "qdrant_xai.explain.results",
    "check_vectors": "qdrant_xai.storage.vector_check",
    "ensure_collection": "qdrant_xai.storage.schema",
    "load_image": "qdrant_xai.images.load",
    "open_client": "qdrant_xai.connection",
    "detect_layout": "qdrant_xai.storage.detect",
    "inspect_collection": "qdrant_xai.storage.detect",
    "resolve_layout": "qdrant_xai.storage.detect",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from qdrant_xai.connection import open_client
    from qdrant_xai.encoding.checkpoints import DEFAULT_MODEL
    from qdrant_xai.encoding.encoder import ClipEncoder, ImageFeatures, TextFeatures
    from qdrant_xai.encoding.fingerprint import ModelFingerprint
    from qdrant_xai.encoding.text_limits import TextLimits
    from qdrant_xai.encoding.words import Word
    from qdrant_xai.errors import (
        CollectionError,
        DeviceUnavailableError,
        DiskFullError,
        FeatureCodecError,
        FeaturesMissingError,
        ImageLoadError,
        InputTooLargeError,
        ModelLoadError,
        ModelMismatchError,
        QdrantUnavailableError,
        QdrantXaiError,
        SchemaMismatchError,
        SourceNotAllowedError,
        StaleFeaturesError,
        StorageLockedError,
    )
    from qdrant_xai.explain.explainer import Explainer
    from qdrant_xai.explain.results import Explanation, WordAttribution
    from qdrant_xai.images.load import ImageLimits, LoadedImage, load_image
    from qdrant_xai.images.policy import ImageSourcePolicy
    from qdrant_xai.retry import RetryPolicy
    from qdrant_xai.search import Searcher
    from qdrant_xai.storage.backfill import Backfiller, BackfillSummary
    from qdrant_xai.storage.codec import PayloadFeatureCodec
    from qdrant_xai.storage.detect import detect_layout, inspect_collection, resolve_layout
    from qdrant_xai.storage.indexer import ImageRecord, Indexer, IndexSummary
    from qdrant_xai.storage.layouts import LAYOUTS, CollectionLayout
    from qdrant_xai.storage.schema import IMAGE_VECTOR, TEXT_VECTOR, PayloadKeys, ensure_collection
    from qdrant_xai.storage.vector_check import VectorCheck, check_vectors
