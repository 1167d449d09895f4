"""Storage: numbers -> Qdrant points, and back.

* :mod:`.schema`: named vectors, payload keys, point ids, collection checks;
* :mod:`.codec`: compact feature maps in payloads, validated on the way back;
* :mod:`.payloads`: the feature part of a point, and the checks a stored point must pass
  (including whether it is current for a model);
* :mod:`.layouts`: where other tools' collections keep vectors, image sources and texts;
* :mod:`.indexer`: images and captions -> points, streamed and resumable;
* :mod:`.backfill`: features for existing points of any layout, written with
  ``set_payload``; vector checks.
"""
