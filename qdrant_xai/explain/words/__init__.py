"""Word methods: which words of a text raised or lowered the match.

One module per family, each registering its methods by name (see :mod:`..base`):
:mod:`.prefix` (``prefix``, the default: word prefixes and word knockouts, from one forward
pass), :mod:`.occlusion` (``occlusion`` and ``context``), :mod:`.integrated_gradients`
(``ig``), :mod:`.token_contributions` (``tokens``).
"""
