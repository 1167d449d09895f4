"""What a report costs: rendering the top 10 hits with grounding over large photos, against
the search + explain that produced them (target: ≤ 10 %), and what the report weighs
(target: ≤ 1 MB whatever the photos' size).

Run on its own::

    python -m tests.benchmarks.rendering            # ViT-B/32-shaped CLIP, random weights
    python -m tests.benchmarks.rendering --quick    # tiny CLIP, smaller photos

As a section of ``python -m tests.benchmarks``: :func:`bench_render` (key ``render``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from qdrant_xai.explain import Explainer, Explanation
from qdrant_xai.render import render_report
from qdrant_xai.search import Searcher
from qdrant_xai.storage.indexer import ImageRecord, Indexer
from tests.benchmarks.harness import BenchConfig, Section, median, ms, target, timed
from tests.benchmarks.inputs import BenchModels, open_client, photo_like, query_stream

__all__ = ["LARGE_SIZES", "bench_render", "write_large_photos"]

#: ten photos: 12 MP both ways, a 1600x90 strip and a 90x1600 one, and common camera sizes
LARGE_SIZES = (
    (4000, 3000),
    (3000, 4000),
    (1600, 90),
    (90, 1600),
    (4000, 3000),
    (2400, 1600),
    (1920, 1080),
    (1080, 1920),
    (4000, 3000),
    (3000, 2000),
)


def write_large_photos(directory: Path, sizes: Sequence[tuple[int, int]]) -> list[str]:
    """One JPEG (quality 90) of each size, a smooth colour field with noise (it compresses
    like a photo: about 3 MB at 12 MP); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(16)
    paths = []
    for i, (width, height) in enumerate(sizes):
        path = directory / f"large_{i:02d}_{width}x{height}.jpg"
        photo_like(rng, width, height).save(path, quality=90)
        paths.append(str(path))
    return paths


def bench_render(config: BenchConfig, models: BenchModels, workdir: Path) -> Section:
    """Search + explain (grounding on) of the top hits over large photos vs. rendering their
    report, round by round on the same hits."""
    encoder = models.main()
    sizes = [(w // 4, h // 4) if config.quick else (w, h) for w, h in LARGE_SIZES]
    paths = write_large_photos(workdir / "large-photos", sizes)
    files_mb = sum(os.path.getsize(p) for p in paths) / 1e6
    client = open_client(workdir / "qdrant-render")
    name = "bench_render"
    Indexer(client, encoder, collection_name=name, profile="standard").index(
        [ImageRecord(p) for p in paths], progress=False
    )
    searcher = Searcher(client, encoder, collection_name=name)
    explainer = Explainer(encoder, client, collection_name=name, grounding=True)
    queries = query_stream()
    k = config.hits
    reps = 3 if config.quick else config.search_reps
    last: list[tuple[str, list[Explanation]]] = []

    def explain() -> None:
        query = next(queries)
        hits = searcher.search_images(query, limit=k)
        last[:] = [(query, explainer.explain(query, hits))]

    def render() -> None:
        render_report(last, model=encoder.model_id)

    def read() -> None:
        for e in last[0][1]:
            e.original_image()

    explain()  # warm up
    render()
    times: dict[str, list[float]] = {"explain": [], "render": [], "read": []}
    for _ in range(reps):
        times["explain"].append(timed(explain))
        times["render"].append(timed(render))
        times["read"].append(timed(read))
    page = render_report(last, model=encoder.model_id)
    client.close()
    explained = last[0][1]
    assert all(e.ok and e.grounding is not None for e in explained), "every hit explained"
    med = {label: median(ts) for label, ts in times.items()}
    per_round = [r / e for r, e in zip(times["render"], times["explain"], strict=True)]
    ratio = med["render"] / med["explain"]
    size_mb = len(page.encode("utf-8")) / 1e6
    section = Section("render", f"Reports: rendering the top {k} hits with grounding")
    words = sum(len(e.grounding.words) for e in explained if e.grounding is not None)
    section.lines += [
        f"{len(paths)} photos ({', '.join(f'{w}x{h}' for w, h in sizes[:4])}, ...; "
        f"{files_mb:.1f} MB of JPEG), indexed with the `standard` profile by {models.name}. "
        f"Each round: a new query, `Searcher.search_images` for the top {k} and "
        "`Explainer.explain` with grounding (default methods), then `render_report` of "
        f"those hits ({words} grounded words); medians of {reps} rounds.",
        "",
        "| | median ms |",
        "|---|---|",
        f"| search + explain (grounding on) | {ms(med['explain'])} |",
        f"| render the report | {ms(med['render'])} |",
        f"| for comparison: reading the {len(explained)} photos alone, one after another "
        f"(`Explanation.original_image`: read, hash, full decode) | {ms(med['read'])} |",
        "",
        f"Render / (search + explain): {target(ratio, 0.10, at_least=False)} (round by round "
        f"{min(per_round):.2f}–{max(per_round):.2f}). Report size: {size_mb:.3f} MB, "
        f"{target(size_mb, 1.0, at_least=False, unit=' MB')}.",
        "",
        "Why: the report draws each photo once as a small JPEG and the heatmap and grounding "
        "as small transparent PNG layers over the crop box, so its weight no longer grows "
        "with the photos. Its time is the photos': reading them one after another "
        f"(`Explanation.original_image`: read, hash, full decode) alone takes "
        f"{ms(med['read'])} ms (the report decodes them in threads), while the explanation "
        "from stored features never reads a photo. Decoding a JPEG at a reduced scale "
        "(`Image.draft`, which `qdrant_xai.images.load` does not offer) would roughly halve "
        "that; a thumbnail stored at indexing time would remove it.",
    ]
    section.data = {
        "median_s": med,
        "ratio": ratio,
        "ratio_per_round": per_round,
        "report_mb": size_mb,
        "photos_mb": files_mb,
    }
    return section


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.rendering")
    parser.add_argument("--quick", action="store_true", help="tiny CLIP, photos a quarter size")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = BenchConfig.quick_run() if args.quick else BenchConfig()
    with tempfile.TemporaryDirectory(prefix="qdrant-xai-bench-render-") as tmp:
        section = bench_render(config, BenchModels(config, Path(tmp)), Path(tmp))
    print(f"## {section.title}\n")
    print("\n".join(section.lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
