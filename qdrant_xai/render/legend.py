"""The report's style sheet and its legend: what the colours, the dimmed area and the labels
mean. Static text only (nothing from a payload goes in here)."""

from __future__ import annotations

from qdrant_xai.images.overlay import LAYER_FLOOR
from qdrant_xai.render.pictures import NEAR_ZERO

__all__ = ["LEGEND", "STYLE"]

#: matplotlib's ``inferno`` at 0, 1/4, 1/2, 3/4 and 1: the colours of the heat layers
INFERNO_STOPS = ("#000004", "#57106e", "#bc3754", "#f98e09", "#fcffa4")

#: the style sheet, one block per part of the page: the text, the pictures, the legend
STYLE = (
    """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:72rem}
h1{font-size:1.3rem;margin-bottom:.2rem} .meta{color:#666;font-size:.9rem}
.hit{display:flex;gap:1.2rem;align-items:flex-start;border-top:1px solid #ddd;padding:1rem 0}
.rank{font-weight:600;font-size:1.1rem;min-width:2.5rem}
.text{font-size:1.05rem;line-height:1.8} .w,.lw{border-radius:3px;padding:0 2px}
.top{color:#555;font-size:.85rem} .why{font-size:.9rem} .why b{color:#7a3e00}
.query{display:flex;gap:1rem;align-items:center;margin:.6rem 0}
@media print{*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
""",
    """
.pic{position:relative;overflow:hidden;background:#e8e8e8;border-radius:4px;flex:none}
.pic.big{width:240px;height:240px} .pic.mid{width:160px;height:160px}
.pic.sm{width:96px;height:96px}
.img{position:absolute;overflow:hidden;background-size:100% 100%;background-repeat:no-repeat}
.crop{position:absolute;outline:1px dashed rgba(255,255,255,.85);
box-shadow:0 0 0 4000px rgba(0,0,0,.55)}
.crop.whole{outline:none;box-shadow:none}
.crop img{position:absolute;left:0;top:0;width:100%;height:100%}
.pic.big:hover .crop img{opacity:0}
.strip{display:flex;gap:.5rem;flex-wrap:wrap;margin:.4rem 0}
.strip figure{margin:0;text-align:center;font-size:.8rem;color:#444;width:96px}
.strip figure.nz{color:#999} .strip figure.nz .pic{opacity:.45}
""",
    """
.legend{border:1px solid #ddd;border-radius:6px;padding:.6rem .9rem;font-size:.85rem;
color:#333;margin:1rem 0;display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;
align-items:center}
.bar{display:inline-block;width:160px;height:12px;border-radius:2px;
background:linear-gradient(to right,"""
    + ",".join(INFERNO_STOPS)
    + """)}
.dim{display:inline-block;width:40px;height:14px;vertical-align:middle;
background:linear-gradient(to right,#777 50%,#bbb 50%);outline:1px dashed #888}
""",
)

LEGEND = (
    "<div class='legend'>"
    "<span><span class='bar'></span></span>"
    "<span>heat over an image, left to right: no evidence → most evidence for the match. A "
    "heatmap is scaled to its own peak; the grounding maps of one hit share one scale (the "
    "hit's strongest word), so a word the image barely shows stays faint. The darkest areas "
    f"are only shaded ({LAYER_FLOOR:.0%} of full strength) so that the picture stays "
    "readable. Hover a picture to see it without colours.</span>"
    "<span><span class='lw' style='background:rgba(255,140,0,.8)'>orange</span> "
    "<span class='lw' style='background:rgba(60,120,255,.8)'>blue</span></span>"
    "<span>a word that raises the match (orange) or lowers it (blue); the stronger the "
    "shade, the larger its share (hover a word for its score).</span>"
    "<span><span class='dim'></span></span>"
    "<span>dimmed: outside the model's crop. CLIP saw only the outlined part of the image "
    "(its centre crop), so nothing outside it can explain the match.</span>"
    "<span>(hit) / (query)</span>"
    "<span>whose image the heatmap covers: the hit's (text→image and image→image searches) "
    "or the query's (image→text: which parts of your image the hit's text matches).</span>"
    "<span>near zero</span>"
    f"<span>a grounded word whose map peaks below {NEAR_ZERO:.0%} of the hit's strongest "
    "word map: the image barely shows it, so no map is drawn (at full contrast it would be "
    "noise that looks like an answer).</span>"
    "</div>"
)
