"""Images: bytes -> RGB, under a policy.

* :mod:`.load`: decoding with limits (bombs, odd modes, EXIF orientation), folder listing,
  query images given as paths, data URIs or base64;
* :mod:`.policy`: :class:`ImageSourcePolicy`, what an untrusted payload may make the library
  read (local roots, URL hosts, base64).
"""
