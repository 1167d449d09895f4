"""Rendering explanations for people: pictures of hits, highlighted words, HTML reports.

- :mod:`~qdrant_xai.render.pictures`: a hit as display-size pictures (:func:`hit_picture`
  → :class:`HitPicture`: the image once as a small JPEG, the heatmap and each grounded
  word as transparent layers over the model's crop box), shared by the reports and the
  web UI; data URIs of images.
- :mod:`~qdrant_xai.render.report`: single self-contained HTML reports (each image in them
  once, a legend, the model named; untrusted text escaped).
"""

from __future__ import annotations

from qdrant_xai.render.pictures import (
    NEAR_ZERO,
    GroundingLayer,
    HitPicture,
    hit_picture,
    image_data_uri,
    png_data_uri,
)
from qdrant_xai.render.report import render_report, render_section, words_html, write_report

__all__ = [
    "NEAR_ZERO",
    "GroundingLayer",
    "HitPicture",
    "hit_picture",
    "image_data_uri",
    "png_data_uri",
    "render_report",
    "render_section",
    "words_html",
    "write_report",
]
