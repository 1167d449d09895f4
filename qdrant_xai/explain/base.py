"""The two method interfaces every explanation method implements, and the registry.

A **heatmap method** turns what is known about N images (:class:`ImageEvidence`) and one
query embedding per image into N heatmaps over the patch grid. It declares which evidence
it can run from (:attr:`HeatmapMethod.requires`, alternatives in order of preference), so
the explainer can use stored features where they suffice and read the image only when
nothing stored will do.

A **word method** turns N ``(text, target embedding)`` pairs into per-word scores. Pairs
that share a text (a text query against its N image hits) are computed once.

Methods are chosen by name::

    from qdrant_xai.explain import heatmap_method, word_method
    heatmaps = heatmap_method("grad-eclip").heatmaps(encoder, evidence, queries)
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from qdrant_xai.encoding.words import Word
from qdrant_xai.errors import UnknownMethodError, UnsupportedMethodError, brief_repr

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder
    from qdrant_xai.images.load import LoadedImage

__all__ = [
    "EVIDENCE_FIELDS",
    "HEATMAP_METHODS",
    "WORD_METHODS",
    "HeatmapMethod",
    "ImageEvidence",
    "MethodRegistry",
    "UnknownMethodError",
    "WordMethod",
    "WordScores",
    "heatmap_method",
    "register_heatmap_method",
    "register_word_method",
    "word_method",
]

#: evidence a heatmap method may need; all but ``images`` can come from the payload
EVIDENCE_FIELDS = ("contributions", "patch_tokens", "last_layer_inputs", "images")


@dataclass
class ImageEvidence:
    """What is known about N images; any field may be missing.

    Attributes:
        embeddings: [N, P] L2-normalised image embeddings.
        contributions: [N, gh, gw, P] direct patch contributions (always stored).
        patch_tokens: [N, gh, gw, P] raw projected patch tokens (stored on request).
        last_layer_inputs: [N, 1 + gh*gw, D] input of the last vision layer (the ``full``
            feature profile; ``[N, gh*gw, D]`` for SigLIP, which has no class token).
        images: the decoded images, when they were read.
    """

    embeddings: np.ndarray | None = None
    contributions: np.ndarray | None = None
    patch_tokens: np.ndarray | None = None
    last_layer_inputs: np.ndarray | None = None
    images: list[LoadedImage] | None = None

    def has(self, name: str) -> bool:
        return getattr(self, name) is not None

    def __len__(self) -> int:
        for name in ("embeddings", *EVIDENCE_FIELDS):
            value = getattr(self, name)
            if value is not None:
                return len(value)
        return 0


class HeatmapMethod(ABC):
    """A heatmap method: evidence about N images + N query embeddings -> N heatmaps.

    Subclasses set :attr:`name`, :attr:`requires` and :attr:`cost` and implement
    :meth:`heatmaps`. Heatmaps are signed float32 ``[N, gh, gw]``: higher means the patch
    did more to raise ``cos(image, query)``.
    """

    name: ClassVar[str]
    #: alternative sets of :class:`ImageEvidence` fields the method can run from, in order
    #: of preference; the explainer reads the image only when no set is available (an
    #: instance may narrow it when an option changes what it needs)
    requires: tuple[frozenset[str], ...]
    #: forward/backward passes per hit, for the docs' cost table
    cost: ClassVar[str] = ""
    #: the model families (``encoder.family.name``) the method explains; methods that
    #: replay CLIP's class token, projection or last layer name ``{"clip"}`` only
    families: ClassVar[frozenset[str]] = frozenset({"clip", "siglip"})

    def check_model(self, encoder: ClipEncoder) -> HeatmapMethod:
        """The method itself, or :class:`~qdrant_xai.errors.UnsupportedMethodError` when it
        cannot explain ``encoder``'s model family (the message names the methods that can)."""
        family = encoder.family.name
        if family not in self.families:
            usable = sorted(
                name
                for name, cls in HEATMAP_METHODS.items()
                if family in getattr(cls, "families", ())
            )
            raise UnsupportedMethodError(
                f"the heatmap method {self.name!r} replays parts of CLIP's vision tower "
                f"(class token, projection, last layer) and cannot explain {encoder.model_id}, "
                f"a {family!r} model; use heatmap_method {', '.join(map(repr, usable))}"
            )
        return self

    def can_run(self, evidence: ImageEvidence) -> bool:
        return any(all(evidence.has(f) for f in option) for option in self.requires)

    @property
    def needs_pixels(self) -> bool:
        """True when no stored feature suffices (the image must be read)."""
        return all("images" in option for option in self.requires)

    @abstractmethod
    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        """[N, gh, gw] heatmaps.

        Args:
            encoder: the model the evidence came from.
            evidence: N images, with at least one of :attr:`requires` satisfied.
            queries: [N, P] one normalised query embedding per image, or [P] for all.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: ``(words, scores)`` of one text: scores [n_words] for one target
WordScores = tuple[tuple[Word, ...], np.ndarray]


class WordMethod(ABC):
    """A word-attribution method: N (text, target) pairs -> N per-word score vectors.

    Scores are in cosine points: positive means the word raised ``cos(text, target)``.
    """

    name: ClassVar[str]
    cost: ClassVar[str] = ""
    #: the model families (``encoder.family.name``) the method explains; ``prefix`` needs a
    #: causal text tower and names ``{"clip"}`` only
    families: ClassVar[frozenset[str]] = frozenset({"clip", "siglip"})

    @abstractmethod
    def attribute(
        self,
        encoder: ClipEncoder,
        texts: Sequence[str],
        targets: np.ndarray,
        *,
        stored: Sequence[np.ndarray | None] | None = None,
    ) -> list[WordScores]:
        """Per-word scores of ``texts[k]`` against ``targets[k]``.

        Args:
            encoder: the CLIP encoder.
            texts: N texts (repeats are computed once).
            targets: [N, P] normalised embeddings of the other side of each pair.
            stored: optional stored word contributions [n_words, P] per text (text hits
                indexed by qdrant-xai); methods that do not use them ignore them.
        """

    def check_model(self, encoder: ClipEncoder) -> WordMethod:
        """The method itself, or :class:`~qdrant_xai.errors.UnsupportedMethodError` when it
        cannot explain ``encoder``'s model family (the message names the methods that can)."""
        family = encoder.family.name
        if family not in self.families:
            usable = sorted(
                name for name, cls in WORD_METHODS.items() if family in getattr(cls, "families", ())
            )
            raise UnsupportedMethodError(
                f"the word method {self.name!r} cannot explain {encoder.model_id}, a "
                f"{family!r} model; use word_method {', '.join(map(repr, usable))}"
            )
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def unique_texts(texts: Sequence[str]) -> tuple[list[str], list[int]]:
    """The distinct texts in first-seen order, and each input's index into them."""
    order: dict[str, int] = {}
    index = [order.setdefault(t, len(order)) for t in texts]
    return list(order), index


_M = TypeVar("_M", HeatmapMethod, WordMethod)


class MethodRegistry(MutableMapping[str, Callable[..., _M]]):
    """Methods of one kind by name. The built-in ones are known by name before their module
    is imported (most need torch): listing names is free, the class loads on first use."""

    def __init__(self, kind: str, builtin: Mapping[str, str]) -> None:
        self.kind = kind
        self._builtin = dict(builtin)
        self._classes: dict[str, Callable[..., _M]] = {}

    def register(self, cls: type[_M]) -> type[_M]:
        """Class decorator: makes a method selectable by its ``name``."""
        self._classes[cls.name] = cls
        return cls

    def create(self, method: str | _M, **options: Any) -> _M:
        """The method called ``method``, built with ``options`` (an instance as is)."""
        if isinstance(method, HeatmapMethod | WordMethod):
            return method
        if method not in self:
            raise UnknownMethodError(
                f"unknown {self.kind} method {brief_repr(str(method))}; "
                f"choose one of {', '.join(sorted(self))}"
            )
        return self[method](**options)

    def __getitem__(self, name: str) -> Callable[..., _M]:
        if name not in self._classes and name in self._builtin:
            importlib.import_module(self._builtin[name])
        return self._classes[name]

    def __setitem__(self, name: str, cls: Callable[..., _M]) -> None:
        self._classes[name] = cls

    def __delitem__(self, name: str) -> None:
        """Forgets a registered method (a built-in one reloads on next use)."""
        del self._classes[name]
        self._builtin.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._builtin, *self._classes]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*self._builtin, *self._classes]))


_HEATMAPS = "qdrant_xai.explain.heatmaps."
_WORDS = "qdrant_xai.explain.words."

#: heatmap methods by name (built-in ones load on first use)
HEATMAP_METHODS: MethodRegistry[HeatmapMethod] = MethodRegistry(
    "heatmap",
    {
        "decomposition": _HEATMAPS + "decomposition",
        "decompx": _HEATMAPS + "decompx",
        "patch": _HEATMAPS + "patch_similarity",
        "debiased": _HEATMAPS + "patch_similarity",
        "clip-surgery": _HEATMAPS + "clip_surgery",
        "multiscale": _HEATMAPS + "patch_similarity",
        "grad-eclip": _HEATMAPS + "gradients",
        "gae": _HEATMAPS + "gradients",
        "gae-last": _HEATMAPS + "gradients",
        "occlusion": _HEATMAPS + "occlusion",
    },
)
#: word methods by name (built-in ones load on first use)
WORD_METHODS: MethodRegistry[WordMethod] = MethodRegistry(
    "word",
    {
        "occlusion": _WORDS + "occlusion",
        "context": _WORDS + "occlusion",
        "ig": _WORDS + "integrated_gradients",
        "tokens": _WORDS + "token_contributions",
        "prefix": _WORDS + "prefix",
    },
)
register_heatmap_method = HEATMAP_METHODS.register
register_word_method = WORD_METHODS.register


def heatmap_method(method: str | HeatmapMethod, **options: Any) -> HeatmapMethod:
    """The heatmap method called ``method`` (an instance is returned as is)."""
    return HEATMAP_METHODS.create(method, **options)


def word_method(method: str | WordMethod, **options: Any) -> WordMethod:
    """The word method called ``method`` (an instance is returned as is)."""
    return WORD_METHODS.create(method, **options)
