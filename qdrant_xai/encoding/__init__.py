"""Encoding: CLIP turns images and texts into numbers.

One forward pass per batch yields the normalised embedding and the explainable features:

* :mod:`.encoder`: :class:`ClipEncoder` (loading, batching, crop geometry, query memory);
* :mod:`.towers`: the hooked forwards of both towers -> per-patch and per-token direct
  contributions (Gandelsman et al., ICLR 2024);
* :mod:`.last_layer`: replay of the last vision layer from its stored input;
* :mod:`.fingerprint`: which model produced a vector, and the one "same model?" check;
* :mod:`.text_limits`: :class:`TextLimits`, how long one query or caption may be;
* :mod:`.words`: words of a text and how BPE tokens map onto them;
* :mod:`.checkpoints`: what a model name means (hub id, folder, bundled ``"shapes"``).
"""
