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
"""

from qdrant_xai._exceptions import (
    CollectionError,
    FeatureCodecError,
    FeaturesMissingError,
    ImageLoadError,
    ModelLoadError,
    ModelMismatchError,
    QdrantUnavailableError,
    QdrantXaiError,
    SchemaMismatchError,
    SourceNotAllowedError,
    StorageLockedError,
)
from qdrant_xai.backfill import Backfiller, BackfillSummary, VectorCheck, check_vectors
from qdrant_xai.codec import PayloadFeatureCodec
from qdrant_xai.collection import IMAGE_VECTOR, TEXT_VECTOR, PayloadKeys, ensure_collection
from qdrant_xai.encoder import DEFAULT_MODEL, ClipEncoder, ImageFeatures, TextFeatures
from qdrant_xai.explain import Explainer, Explanation, WordAttribution
from qdrant_xai.fingerprint import ModelFingerprint
from qdrant_xai.images import ImageLimits, LoadedImage, load_image
from qdrant_xai.indexing import ImageRecord, Indexer, IndexSummary
from qdrant_xai.layouts import LAYOUTS, CollectionLayout
from qdrant_xai.resilience import RetryPolicy, open_client
from qdrant_xai.search import Searcher
from qdrant_xai.sources import ImageSourcePolicy
from qdrant_xai.words import Word

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "IMAGE_VECTOR",
    "LAYOUTS",
    "TEXT_VECTOR",
    "BackfillSummary",
    "Backfiller",
    "ClipEncoder",
    "CollectionError",
    "CollectionLayout",
    "Explainer",
    "Explanation",
    "FeatureCodecError",
    "FeaturesMissingError",
    "ImageFeatures",
    "ImageLimits",
    "ImageLoadError",
    "ImageRecord",
    "ImageSourcePolicy",
    "IndexSummary",
    "Indexer",
    "LoadedImage",
    "ModelFingerprint",
    "ModelLoadError",
    "ModelMismatchError",
    "PayloadFeatureCodec",
    "PayloadKeys",
    "QdrantUnavailableError",
    "QdrantXaiError",
    "RetryPolicy",
    "SchemaMismatchError",
    "Searcher",
    "SourceNotAllowedError",
    "StorageLockedError",
    "TextFeatures",
    "VectorCheck",
    "Word",
    "WordAttribution",
    "check_vectors",
    "ensure_collection",
    "load_image",
    "open_client",
]
