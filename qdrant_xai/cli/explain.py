"""``qdrant-xai explain POINT_ID``: explain one point of a collection for a query."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Literal

from qdrant_xai.cli import options
from qdrant_xai.cli.output import print_hits
from qdrant_xai.errors import QdrantXaiError

if TYPE_CHECKING:
    from qdrant_client import models

    from qdrant_xai.encoding.encoder import ClipEncoder
    from qdrant_xai.images.load import LoadedImage
    from qdrant_xai.retry import RetryPolicy

__all__ = ["NEEDS_CLIENT", "add_parser", "run"]

NEEDS_CLIENT = True


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("explain", help="explain one point for a query")
    parser.add_argument("point_id", metavar="POINT_ID")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query")
    query.add_argument("--image", metavar="PATH", help="image query")
    options.add_hit_options(parser)
    options.add_qdrant_options(parser)


def run(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.search import light_payload
    from qdrant_xai.storage.schema import parse_point_id, require_collection

    retry = options.retry_policy(args)
    info = require_collection(client, args.collection, retry=retry)
    point_id = parse_point_id(args.point_id)
    records = retry.call(
        client.retrieve,
        args.collection,
        what=f"reading point {args.point_id} of {args.collection!r}",
        client=client,
        ids=[point_id],
        with_payload=light_payload(),
    )
    if not records:
        raise QdrantXaiError(f"no point {args.point_id} in collection {args.collection!r}")
    query = options.read_query(args)
    encoder = options.load_encoder(args, client)
    scored, hit_kind = _score_point(
        args, client, encoder, query, point_id, records[0].payload or {}, info, retry
    )
    explanations = options.build_explainer(args, client, encoder).explain(
        query, scored, hit_kind=hit_kind
    )
    print_hits(args, query, scored, explanations)
    return 0


def _score_point(
    args: argparse.Namespace,
    client: Any,
    encoder: ClipEncoder,
    query: str | LoadedImage,
    point_id: int | str,
    payload: dict[str, Any],
    info: models.CollectionInfo,
    retry: RetryPolicy,
) -> tuple[list[models.ScoredPoint], Literal["image", "text"]]:
    """The point scored for ``query`` exactly as a search would (``query_points`` filtered
    to its id), so its explanation carries its real score; and the point's kind.

    This is what ``Searcher.score_points(query, ids, hit_kind=None)`` is to do for every
    caller (the MCP server and the LangChain retriever repeat it); once it exists, this
    function is replaced by that call.
    """
    from qdrant_client import models

    from qdrant_xai.search import light_payload
    from qdrant_xai.storage.layouts import layout_named
    from qdrant_xai.storage.schema import PayloadKeys, check_query_dimension

    layout = layout_named(args.layout)
    if layout.name != "qdrant-xai":
        layout = layout.resolve(client, args.collection, retry=retry)
    hit_kind: Literal["image", "text"] = payload.get(PayloadKeys.KIND) or (
        "text" if layout.text(payload) and not layout.image_source(payload) else "image"
    )
    using = layout.using("image" if hit_kind == "image" else "text")
    check_query_dimension(info, args.collection, using, dim=encoder.dim, model=encoder.model_id)
    vector = (
        encoder.embed_texts([query])[0]
        if isinstance(query, str)
        else encoder.embed_images([query])[0]
    )
    scored = retry.call(
        client.query_points,
        args.collection,
        what=f"scoring point {args.point_id} in {args.collection!r}",
        client=client,
        query=vector.tolist(),
        using=using,
        limit=1,
        query_filter=models.Filter(must=[models.HasIdCondition(has_id=[point_id])]),
        with_payload=light_payload(),
    ).points
    return scored, hit_kind
