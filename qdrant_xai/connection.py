"""Opening a Qdrant client, and naming the server it talks to without its secrets.

:func:`open_client` turns the ways a client fails to open (a folder another process holds,
a damaged or unreadable folder, a full disk) into :class:`~qdrant_xai.errors.StorageLockedError`,
:class:`~qdrant_xai.errors.QdrantUnavailableError` and :class:`~qdrant_xai.errors.DiskFullError`;
an embedded folder left with an empty ``meta.json`` and no collection data (a first write on
a full disk) opens as a fresh folder (a full disk is recognised by
:func:`~qdrant_xai.files.disk_full_error`). :func:`describe_server` and :func:`redact` let
every message name the server (its URL, user info stripped) and never its API key.

Use::

    from qdrant_xai import open_client
    client = open_client("http://localhost:6333", api_key=os.environ.get("QDRANT_API_KEY"),
                         timeout=10)
    embedded = open_client(path="./qdrant_data")
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from qdrant_client import QdrantClient

from qdrant_xai.errors import (
    QdrantUnavailableError,
    QdrantXaiError,
    StorageLockedError,
    brief_repr,
)
from qdrant_xai.files import disk_full_error, replace_whole

__all__ = ["describe_server", "open_client", "redact", "strip_userinfo"]

_META = "meta.json"  # the collection list of an embedded folder (qdrant-client's local mode)


def describe_server(client: Any) -> str:
    """Where ``client`` points, for messages: ``Qdrant at http://host:6333`` (user info
    stripped) or ``embedded Qdrant at ./qdrant_data``; never the API key."""
    inner = _inner(client)
    location = getattr(inner, "location", None)
    if isinstance(location, str):
        return f"embedded Qdrant at {location}"
    rest_uri = getattr(inner, "rest_uri", None)
    if isinstance(rest_uri, str):
        return f"Qdrant at {strip_userinfo(rest_uri)}"
    options = _init_options(client)
    for key in ("url", "host", "location", "path"):
        value = options.get(key)
        if isinstance(value, str) and value:
            prefix = "embedded Qdrant at " if key in ("location", "path") else "Qdrant at "
            return prefix + strip_userinfo(value)
    return "Qdrant (address unknown)"


def redact(text: str, client: Any = None, secrets: tuple[str | None, ...] = ()) -> str:
    """``text`` with the client's API key (and ``secrets``) replaced by ``***``."""
    for secret in (*_secrets(client), *secrets):
        if secret:
            text = text.replace(secret, "***")
    return text


def _inner(client: Any) -> Any:
    try:
        return getattr(client, "_client", client)
    except Exception:
        return client


def _init_options(client: Any) -> dict[str, Any]:
    try:
        options = getattr(client, "init_options", None)
    except Exception:
        return {}
    return options if isinstance(options, dict) else {}


def _secrets(client: Any) -> list[str]:
    if client is None:
        return []
    found: list[Any] = [_init_options(client).get("api_key")]
    inner = _inner(client)
    found.append(getattr(inner, "_api_key", None))
    for holder in (getattr(inner, "_rest_headers", None), _init_options(client).get("headers")):
        if isinstance(holder, dict):
            found += [
                v for k, v in holder.items() if str(k).lower() in ("api-key", "authorization")
            ]
    return [s for s in found if isinstance(s, str) and s]


def strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rsplit("@", 1)[-1]
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=netloc))


def open_client(
    url: str | None = None,
    *,
    path: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> QdrantClient:
    """A ``QdrantClient`` for a server (``url``) or an embedded folder (``path``, or
    ``":memory:"``), with clear errors.

    Args:
        url: the server, ``http(s)://host:port``.
        path: an embedded storage folder (one process at a time) or ``":memory:"``.
        api_key: the server's API key (never printed).
        timeout: seconds per request (qdrant-client rounds it up to whole seconds).
        kwargs: passed to ``QdrantClient``.

    Raises:
        StorageLockedError: another process (or client) has the folder open.
        QdrantUnavailableError: the folder cannot be read or written.
        DiskFullError: a new folder's first file cannot be written, the disk is full.
        QdrantXaiError: neither or both of ``url`` and ``path``; a ``timeout`` that is not
            a positive number.
    """
    if (url is None) == (path is None):
        raise QdrantXaiError(
            "give either a Qdrant server URL (url=..., QDRANT_URL, --url) or an embedded "
            "storage folder (path=..., --path), exactly one"
        )
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise QdrantXaiError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if url is not None:
        seconds = None if timeout is None else max(1, int(-(-timeout // 1)))
        return QdrantClient(url=url, api_key=api_key, timeout=seconds, **kwargs)
    if path == ":memory:":
        return QdrantClient(location=":memory:", **kwargs)
    path = str(path)
    _prepare_folder(path)
    try:
        return QdrantClient(path=path, **kwargs)
    except RuntimeError as exc:
        if "already accessed" not in str(exc):
            raise
        _close_lock_file(exc)
        raise StorageLockedError(
            f"the embedded Qdrant folder {path} is open in another process (or client); "
            "embedded mode allows one at a time. Wait for it to finish, or run a Qdrant server "
            "(docker/docker-compose.yml) and point every process at it with QDRANT_URL / --url "
            "for concurrent access"
        ) from exc
    except ValueError as exc:  # meta.json damaged, or empty beside collection data
        _close_lock_file(exc)
        raise _damaged(path, exc) from exc
    except OSError as exc:  # an unwritable or unreadable folder, a file where a folder is
        _close_lock_file(exc)
        full = disk_full_error(exc, f"the embedded Qdrant folder {path}")
        if full is not None:
            raise full from exc
        raise QdrantUnavailableError(
            f"cannot open the embedded Qdrant folder {path} ({exc.strerror or exc}); check that "
            "it is a folder this user can read and write, or choose another with --path"
        ) from exc


def _close_lock_file(exc: BaseException) -> None:
    """Closes the lock file qdrant-client left open when the folder was locked.

    ``QdrantLocal`` opens ``<path>/.lock`` before trying the lock and does not close it when
    the lock fails: each refused attempt would leak a file handle (and warn when collected).
    """
    tb = exc.__traceback__
    while tb is not None:
        handle = getattr(tb.tb_frame.f_locals.get("self"), "_flock_file", None)
        if handle is not None and not getattr(handle, "closed", True):
            handle.close()
        tb = tb.tb_next


def _prepare_folder(path: str) -> None:
    """Writes the ``meta.json`` of a new embedded folder whole or not at all, before
    qdrant-client would write it in place (on a full disk it leaves an empty file, which it
    then refuses to read): a missing or empty ``meta.json`` in a folder without collection
    data becomes a fresh one, written to a temporary file and renamed over. Any other
    problem (a file where the folder should be, no permission) is left to qdrant-client,
    whose error :func:`open_client` words."""
    meta = Path(path) / _META
    try:
        if meta.is_file() and meta.read_bytes().strip():
            return  # a written meta.json: qdrant-client reads it (and words its damage)
        if meta.exists() and not meta.is_file():
            return
        if _collection_data(Path(path)):
            return  # empty meta.json beside collection data: refused as damaged
        meta.parent.mkdir(parents=True, exist_ok=True)
        replace_whole(meta, json.dumps({"collections": {}, "aliases": {}}))
    except OSError as exc:
        full = disk_full_error(exc, f"the embedded Qdrant folder {path}")
        if full is not None:
            raise full from exc


def _collection_data(folder: Path) -> list[str]:
    """Names of the collections of an embedded folder that hold data (a non-empty file)."""
    names = []
    try:
        for collection in sorted((folder / "collection").iterdir()):
            if collection.is_dir() and any(
                f.is_file() and f.stat().st_size > 0 for f in collection.iterdir()
            ):
                names.append(collection.name)
    except OSError:
        pass
    return names


def _damaged(path: str, exc: ValueError) -> QdrantUnavailableError:
    names = _collection_data(Path(path))
    held = (
        f"holds collection data ({', '.join(brief_repr(n) for n in names[:5])}"
        f"{', ...' if len(names) > 5 else ''}) but its {_META} is empty or damaged, so their "
        "settings are lost"
        if names
        else f"its {_META} is damaged"
    )
    return QdrantUnavailableError(
        f"cannot open the embedded Qdrant folder {path}: its storage is damaged ({held}; "
        f"{' '.join(str(exc).split())[:200]}); move the folder aside and index again, or "
        "restore it from a snapshot"
    )
