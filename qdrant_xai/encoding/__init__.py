"""Encoding: CLIP (or SigLIP) turns images and texts into numbers.

One forward pass per batch yields the normalised embedding and the explainable features:

* :mod:`.encoder`: :class:`ClipEncoder` (loading, batching, crop geometry, query memory);
* :mod:`.families`: what differs between CLIP and SigLIP, picked from ``config.model_type``;
* :mod:`.towers`: the hooked forwards of both towers -> per-patch and per-token direct
  contributions (Gandelsman et al., ICLR 2024);
* :mod:`.siglip_towers`: SigLIP's: the attention-pooling head split by patch (its layer
  norm and MLP linearised at the pooled vector), the last position's text paths;
* :mod:`.last_layer`: replay of the last vision layer from its stored input;
* :mod:`.fingerprint`: which model produced a vector, and the one "same model?" check;
* :mod:`.text_limits`: :class:`TextLimits`, how long one query or caption may be;
* :mod:`.words`: words of a text and how BPE tokens map onto them;
* :mod:`.checkpoints`: what a model name means (hub id, folder, bundled ``"shapes"``).
"""
