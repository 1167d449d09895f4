"""The offline demo: a synthetic world of coloured shapes and the small CLIP trained on it.

* :mod:`.world`: the shapes world (scenes, captions, object masks);
* :mod:`.run`: ``qdrant-xai demo`` (index, search, explain, write a report);
* ``model/``: the bundled checkpoint, loaded as ``ClipEncoder.from_pretrained("shapes")``
  (``model/TRAINING.md`` says how ``examples/train_shapes_clip.py`` made it).
"""
