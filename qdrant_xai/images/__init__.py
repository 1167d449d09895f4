"""Images: bytes -> RGB, under a policy.

* :mod:`.load`: decoding with limits (bombs, odd modes, EXIF orientation), folder listing;
* :mod:`.policy`: :class:`ImageSourcePolicy`, what an untrusted string may make the library
  read (local roots, URL hosts, base64), and the base64 / data URI decoding; its halves
  :mod:`.local` (files beneath the roots) and :mod:`.remote` (http(s) fetching), with
  :mod:`.labels` naming sources in messages;
* :mod:`.query`: :func:`~.query.load_query_image`, a query image given as a string (data
  URI, base64 or path), as every adapter takes it.
"""
