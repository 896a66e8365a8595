"""The models users may choose, in one table: each provider's id for them, their output
sizes, and their list price per image (for team control's cost estimate).

Providers sell the same Google models under different ids (Nexconn calls Gemini 3 Pro Image
`gemini-3.0-pro-image-preview`); a model missing from a provider's column is one that
provider does not sell, and a request for it is refused before anything is queued.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.errors import ImagineError

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "SIZES",
    "ModelInfo",
    "ModelNotOffered",
    "ModelNotSold",
    "SizeNotSupported",
    "choose",
    "made_with",
    "model_info",
]

SIZES: tuple[str, ...] = ("1K", "2K", "4K")
"""Output sizes as Google names them (`imageConfig.imageSize`)."""

DEFAULT_MODEL = "gemini-2.5-flash-image"

SELLERS: frozenset[str] = frozenset({"nexconn", "gmi", "gemini"})
"""Providers whose catalogue the table below records."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model. `id` is Google's name, which users and settings use."""

    id: str
    label: str
    provider_ids: Mapping[str, str] = field(hash=False)
    """Provider name → the id that provider expects; absent: not sold there."""
    sizes: tuple[str, ...] = ()
    """Output sizes users may choose; empty: the model has one (1K)."""
    prices: Mapping[str, float] = field(default_factory=dict, hash=False)
    """US$ per image at list price, by size ("1K" for a model without sizes)."""

    @property
    def default_size(self) -> str:
        return self.sizes[0] if self.sizes else "1K"

    def price(self, size: str | None = None) -> float | None:
        return self.prices.get(size or self.default_size)

    def provider_id(self, provider: str) -> str | None:
        """The id `provider` sells this model under; the demo provider (and any provider
        the table does not know, such as a test's) draws any model."""
        if provider not in SELLERS:
            return self.id
        return self.provider_ids.get(provider)


MODELS: Mapping[str, ModelInfo] = {
    info.id: info
    for info in (
        ModelInfo(
            "gemini-2.5-flash-image",
            "Gemini 2.5 Flash Image",
            {
                "nexconn": "gemini-2.5-flash-image",
                "gmi": "gemini-2.5-flash-image",
                "gemini": "gemini-2.5-flash-image",
            },
            prices={"1K": 0.039},
        ),
        ModelInfo(
            "gemini-3-pro-image-preview",
            "Gemini 3 Pro Image",
            {
                "nexconn": "gemini-3.0-pro-image-preview",
                "gmi": "gemini-3-pro-image-preview",
                "gemini": "gemini-3-pro-image-preview",
            },
            sizes=SIZES,
            prices={"1K": 0.134, "2K": 0.134, "4K": 0.24},
        ),
        ModelInfo(
            "gemini-3.1-flash-image-preview",
            "Gemini 3.1 Flash Image",
            {
                "nexconn": "gemini-3.1-flash-image-preview",
                "gemini": "gemini-3.1-flash-image-preview",
            },
            sizes=SIZES,
            prices={"1K": 0.067, "2K": 0.101, "4K": 0.151},
        ),
    )
}


def model_info(model: str) -> ModelInfo:
    """The table's entry, or one for a model id the table does not know (a new preview a
    team configured itself): every provider is assumed to sell it under that id."""
    known = MODELS.get(model)
    if known is not None:
        return known
    return ModelInfo(model, model, {"nexconn": model, "gmi": model, "gemini": model})


PROVIDER_LABELS: Mapping[str, str] = {
    "nexconn": "Nexconn",
    "gmi": "GMI Cloud",
    "gemini": "Google Gemini API",
    "demo": "the offline demo",
}


def made_with(model: str, size: str | None, provider: str) -> str:
    """`Gemini 3 Pro Image · 2K · via GMI Cloud`: what a result's caption says made it."""
    parts = [model_info(model).label]
    if size:
        parts.append(size)
    parts.append(f"via {PROVIDER_LABELS.get(provider, provider)}")
    return " · ".join(parts)


def choose(
    offered: tuple[str, ...], provider: str, model: str, size: str | None
) -> tuple[str, str | None]:
    """`model` and `size` as a job runs them, or the sentence refusing them: a model this
    bot does not offer, one its provider(s) (`nexconn,gmi`) do not sell, a size the model
    does not make. A model's only size is None."""
    if model not in offered:
        raise ModelNotOffered(model, offered)
    info = model_info(model)
    if not any(info.provider_id(name) for name in provider.split(",")):
        raise ModelNotSold(model, provider)
    if size is None or size == info.default_size:
        return model, size if info.sizes else None
    if size not in info.sizes:
        raise SizeNotSupported(model, size)
    return model, size


class ModelNotOffered(ImagineError):
    code = "model_not_offered"

    def __init__(self, model: str, offered: tuple[str, ...], *, detail: str | None = None) -> None:
        super().__init__(
            f"This bot doesn't offer {model!r}. Choose one of: {', '.join(offered)}.",
            detail=detail,
        )


class ModelNotSold(ImagineError):
    code = "model_not_sold"

    def __init__(self, model: str, provider: str, *, detail: str | None = None) -> None:
        label = model_info(model).label
        super().__init__(
            f"{label} isn't available from this bot's image provider ({provider}). "
            "Choose another model.",
            detail=detail,
        )


class SizeNotSupported(ImagineError):
    code = "size_not_supported"

    def __init__(self, model: str, size: str, *, detail: str | None = None) -> None:
        info = model_info(model)
        choices = ", ".join(info.sizes) if info.sizes else "only its standard size (1K)"
        super().__init__(
            f"{info.label} can't make {size} images; it offers {choices}.", detail=detail
        )
