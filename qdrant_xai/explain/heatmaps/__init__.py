"""Heatmap methods: where in an image the match with the other side comes from.

One module per family, each registering its methods by name (see :mod:`..base`):
:mod:`.decomposition` (``decomposition``, the default), :mod:`.decompx` (``decompx``,
every layer's share of each patch), :mod:`.patch_similarity`
(``patch``, ``debiased``, ``multiscale``), :mod:`.clip_surgery` (``clip-surgery``),
:mod:`.gradients` (``grad-eclip``, ``gae``, ``gae-last``), :mod:`.occlusion`
(``occlusion``, sliding patches or RISE masks).
"""
