"""Which checkpoint a model name means: a hub id, a local folder, or a bundled model.

Kept free of torch at import so that the command line can name models in its help and
errors before loading anything; :func:`check_device` says which torch devices can run one.
``"shapes"`` is the small CLIP bundled with the package (trained on the synthetic shapes
world of :mod:`qdrant_xai.demo.world` by ``examples/train_shapes_clip.py``);
:meth:`~qdrant_xai.ClipEncoder.from_pretrained` resolves it, so nothing else needs its
folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from qdrant_xai.errors import DeviceUnavailableError, MissingDependencyError, brief_repr

if TYPE_CHECKING:
    import torch

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_MODEL",
    "available_devices",
    "check_device",
    "checkpoint_path",
    "is_loadable_name",
    "missing_dependency",
    "quiet_transformers",
]

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

#: models shipped inside the package, by the name users pass for them
BUNDLED_MODELS: dict[str, Path] = {
    "shapes": Path(__file__).resolve().parent.parent / "demo" / "model",
}


def checkpoint_path(name: str | os.PathLike[str]) -> str:
    """The folder of a bundled model's name; any other name (hub id, folder) as given."""
    text = os.fspath(name)
    bundled = BUNDLED_MODELS.get(text)
    return str(bundled) if bundled is not None else text


def is_loadable_name(name: object) -> bool:
    """Whether a model name recorded in a collection can be loaded here: a bundled name, an
    existing folder, or something shaped like a hub id (``owner/name``)."""
    if not isinstance(name, str):
        return False
    return (
        name in BUNDLED_MODELS or os.path.isdir(name) or ("/" in name and not os.path.isabs(name))
    )


def quiet_transformers() -> None:
    """Silences transformers' own log lines and progress bars (weights loading, shards): the
    command line and the MCP server print their own messages, and an MCP server's stdout
    belongs to the protocol."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def available_devices() -> list[str]:
    """The torch devices this process can run a model on, e.g. ``["cpu", "cuda:0"]``."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: object) -> torch.device:
    """``device`` as a torch device, or :class:`~qdrant_xai.errors.DeviceUnavailableError`
    (naming the devices there are) when it is malformed or not usable here."""
    import torch

    available = available_devices()
    fix = f"available here: {', '.join(available)}; pass --device / device= one of them"
    try:
        parsed = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DeviceUnavailableError(
            f"device {brief_repr(device)} is not a torch device name ({fix})"
        ) from exc
    if parsed.type == "cpu":
        return parsed
    usable = {torch.device(name) for name in available}
    if parsed in usable or (parsed.index is None and parsed.type in {d.type for d in usable}):
        return parsed
    raise DeviceUnavailableError(f"device {brief_repr(device)} is not available ({fix})")


#: packages a checkpoint's processor may need beyond the core: (package, its modules, extra)
_OPTIONAL_PACKAGES = (
    ("sentencepiece", ("sentencepiece",), "siglip"),
    ("protobuf", ("google.protobuf", "google"), "siglip"),
)


def missing_dependency(exc: BaseException, model_id: str) -> MissingDependencyError | None:
    """The typed error for a checkpoint load that failed for want of an optional package
    (transformers' ``ImportError`` for SigLIP's SentencePiece ``SiglipTokenizer``, which
    needs ``sentencepiece`` and ``protobuf``), naming the extra; ``None`` for any other."""
    if not isinstance(exc, ImportError):
        return None
    message = str(exc).lower()
    for package, modules, extra in _OPTIONAL_PACKAGES:
        if package in message or exc.name in modules:
            return MissingDependencyError(
                f"{brief_repr(model_id)} has a SentencePiece tokenizer (SigLIP's spiece.model), "
                f"which needs the {package} package: pip install 'qdrant-xai[{extra}]' "
                "(sentencepiece and protobuf)"
            )
    return None
