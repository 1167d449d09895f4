"""Opening a Qdrant client, and naming the server it talks to without its secrets.

:func:`open_client` turns the ways a client fails to open (a folder another process holds,
a damaged or unreadable folder) into :class:`~qdrant_xai.errors.StorageLockedError` and
:class:`~qdrant_xai.errors.QdrantUnavailableError`; :func:`describe_server` and
:func:`redact` let every message name the server (its URL, user info stripped) and never its
API key.

Use::

    from qdrant_xai import open_client
    client = open_client("http://localhost:6333", api_key=os.environ.get("QDRANT_API_KEY"),
                         timeout=10)
    embedded = open_client(path="./qdrant_data")
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from qdrant_client import QdrantClient

from qdrant_xai.errors import QdrantUnavailableError, QdrantXaiError, StorageLockedError

__all__ = ["describe_server", "open_client", "redact", "strip_userinfo"]


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
        QdrantXaiError: neither or both of ``url`` and ``path``.
    """
    if (url is None) == (path is None):
        raise QdrantXaiError(
            "give either a Qdrant server URL (url=..., QDRANT_URL, --url) or an embedded "
            "storage folder (path=..., --path), exactly one"
        )
    if url is not None:
        seconds = None if timeout is None else max(1, int(-(-timeout // 1)))
        return QdrantClient(url=url, api_key=api_key, timeout=seconds, **kwargs)
    if path == ":memory:":
        return QdrantClient(location=":memory:", **kwargs)
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
    except ValueError as exc:  # meta.json empty or damaged (killed while it was first written)
        _close_lock_file(exc)
        raise QdrantUnavailableError(
            f"cannot open the embedded Qdrant folder {path}: its storage is damaged ({exc}); "
            "move the folder aside and index again, or restore it from a snapshot"
        ) from exc
    except OSError as exc:  # an unwritable or unreadable folder, a file where a folder is
        _close_lock_file(exc)
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
