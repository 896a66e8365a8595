"""Every failure a user can meet, each with its own short human sentence.

Adapters only render `ImagineError.user_message`; the technical detail (`detail`) goes to
the log, never to chat. `retryable` says whether a Retry button makes sense.
"""

from __future__ import annotations

import math

from bot.redact import redact

MAX_REFERENCE_IMAGES = 3
MAX_IMAGE_BYTES = 7 * 1024 * 1024
MAX_PROMPT_CHARS = 2000
MAX_IMAGE_PIXELS = 50_000_000
"""Pixels one reference image may have once decoded (an 8-bit RGBA one takes 4 bytes each)."""
SUPPORTED_MIME_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def plural(count: int, noun: str) -> str:
    """`1 image`, `2 images`, `0 images`: a count with its noun, read right for every number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _trim(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class ImagineError(Exception):
    """Base of every user-visible failure."""

    retryable: bool = False
    code: str = "error"
    maybe_billed: bool = False
    """The request reached the provider and may be generating (and billing) still: a
    timeout or dropped connection after it was sent. Nothing sends it elsewhere then."""

    def __init__(self, user_message: str, *, detail: str | None = None) -> None:
        # Masked here, once: the sentence reaches chat and the jobs table, the detail the
        # log, and a provider's error may quote our request back (keys and all).
        user_message, detail = redact(user_message), redact(detail or user_message)
        super().__init__(detail)
        self.user_message = user_message
        self.detail = detail

    def __str__(self) -> str:  # the log line
        return f"{type(self).__name__}: {self.detail}"


# --- provider outcomes -------------------------------------------------------------------


class SafetyBlocked(ImagineError):
    code = "safety"

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "The image model's safety filter blocked this request. "
            "Try rewording the prompt or using a different image.",
            detail=detail,
        )


class NoImageReturned(ImagineError):
    code = "no_image"
    retryable = True

    def __init__(self, model_text: str = "", *, detail: str | None = None) -> None:
        self.model_text = model_text
        if model_text.strip():
            message = f'The model answered without an image: "{_trim(model_text)}"'
        else:
            message = "The model didn't return an image this time. Try rephrasing the prompt."
        super().__init__(message, detail=detail)


class RateLimited(ImagineError):
    code = "rate_limited"
    retryable = True

    def __init__(self, retry_after: float | None = None, *, detail: str | None = None) -> None:
        self.retry_after = retry_after
        if retry_after and retry_after > 0:
            wait = math.ceil(retry_after)
            when = (
                f"in {plural(wait, 'second')}"
                if wait < 120
                else f"in {math.ceil(wait / 60)} minutes"
            )
            message = f"The image provider is rate limiting us. Please try again {when}."
        else:
            message = "The image provider is rate limiting us. Please try again in a minute."
        super().__init__(message, detail=detail)


class ProviderUnavailable(ImagineError):
    code = "unavailable"
    retryable = True

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "The image provider is unavailable right now. Please try again in a few minutes.",
            detail=detail,
        )


class ProviderTimeout(ImagineError):
    code = "timeout"
    retryable = True

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "The image provider took too long to answer. Please try again.", detail=detail
        )


class InvalidProviderResponse(ImagineError):
    """Malformed JSON, bad base64, an oversized or non-image answer from the provider."""

    code = "bad_response"
    retryable = True

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "The image provider sent an answer I couldn't read. Please try again.",
            detail=detail,
        )


class BrokenImage(ImagineError):
    """The answer held image bytes that do not decode whole (cut short, corrupt, a bomb)."""

    code = "broken_image"
    retryable = True

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__("The image provider sent a broken image. Please try again.", detail=detail)


class BadApiKey(ImagineError):
    """The key was refused: the user learns an admin must act; the log says what failed."""

    code = "bad_key"

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "The bot isn't set up correctly for its image provider. "
            "An admin has been told to check the logs.",
            detail=detail,
        )


class ProviderRejected(ImagineError):
    """A 4xx input error the provider explains; its message is safe but trimmed."""

    code = "rejected"

    def __init__(self, reason: str = "", *, detail: str | None = None) -> None:
        message = "The image provider rejected this request"
        message += f": {_trim(reason, 200)}" if reason.strip() else "."
        super().__init__(message, detail=detail)


class ModelRefused(ImagineError):
    """The model declined for a reason that holds on every retry (recitation of existing
    work, a blocklist, prohibited content, personal data, an operator's filter): not the
    safety filter, which `SafetyBlocked` is. `reason` is a short clause saying why."""

    code = "refused"

    def __init__(self, reason: str = "", *, detail: str | None = None) -> None:
        self.reason = reason
        message = "The image model refused this request"
        message += f": {reason}." if reason.strip() else "."
        message += " Asking again won't change that: try a different prompt or image."
        super().__init__(message, detail=detail)


class ProviderAccountBlocked(ImagineError):
    """The provider restricted or disabled our account: only an admin can act (the log
    says what to check); the user is told so, briefly."""

    code = "account_blocked"

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "The image provider has restricted the bot's account. "
            "An admin needs to check the provider account.",
            detail=detail,
        )


# --- user input ----------------------------------------------------------------------------


class NotAnImage(ImagineError):
    code = "not_image"

    def __init__(self, name: str = "", *, detail: str | None = None) -> None:
        what = f"“{name}”" if name else "That attachment"
        super().__init__(
            f"{what} isn't an image. Attach a PNG, JPEG, WebP, HEIC or HEIF file.", detail=detail
        )


class UnsupportedImageType(ImagineError):
    code = "unsupported_type"

    def __init__(self, mime: str, *, detail: str | None = None) -> None:
        self.mime = mime
        super().__init__(
            f"{mime} images aren't supported. Use PNG, JPEG, WebP, HEIC or HEIF.", detail=detail
        )


class ImageTooLarge(ImagineError):
    code = "too_large"

    def __init__(self, size: int, *, detail: str | None = None) -> None:
        self.size = size
        super().__init__(
            f"That image is {_mb(size)}; the limit is {_mb(MAX_IMAGE_BYTES)} per image.",
            detail=detail,
        )


class ImageTooManyPixels(ImagineError):
    """A reference image whose pixels would not fit in memory (a decompression bomb)."""

    code = "too_many_pixels"

    def __init__(
        self, width: int | None = None, height: int | None = None, *, detail: str | None = None
    ) -> None:
        self.width, self.height = width, height
        limit = MAX_IMAGE_PIXELS // 1_000_000
        if width and height:
            size = f"{width}×{height} pixels"
            message = f"That image is {size}; the limit is {limit} megapixels per image."
        else:
            message = f"That image has too many pixels; the limit is {limit} megapixels per image."
        super().__init__(message, detail=detail)


class DamagedImage(ImagineError):
    """The bytes start like an image but do not decode to one (cut off or corrupt)."""

    code = "damaged_image"

    def __init__(self, name: str = "", *, detail: str | None = None) -> None:
        what = f"“{name}”" if name else "That image"
        super().__init__(
            f"{what} is damaged or incomplete, so I can't open it. Please attach it again.",
            detail=detail,
        )


class TooManyImages(ImagineError):
    code = "too_many_images"

    def __init__(
        self, count: int, limit: int = MAX_REFERENCE_IMAGES, *, detail: str | None = None
    ) -> None:
        self.count = count
        super().__init__(
            f"You attached {count} images; at most {limit} can be used at once.", detail=detail
        )


class TooManyImagesForEdit(ImagineError):
    """An edit whose provider takes the previous image as one of its `limit` inputs."""

    code = "too_many_images_edit"

    def __init__(self, count: int, limit: int, *, detail: str | None = None) -> None:
        self.count = count
        room = max(limit - 1, 0)
        fits = f"at most {room} new image fits" if room == 1 else f"at most {room} new images fit"
        super().__init__(
            f"This edit sends the previous image along with yours, so {fits} "
            f"(you attached {count}). Attach fewer images.",
            detail=detail,
        )


class EmptyPrompt(ImagineError):
    code = "empty_prompt"

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__("Tell me what to draw: the prompt is empty.", detail=detail)


class PromptTooLong(ImagineError):
    code = "prompt_too_long"

    def __init__(self, length: int, *, detail: str | None = None) -> None:
        self.length = length
        super().__init__(
            f"The prompt is {length} characters; please keep it under {MAX_PROMPT_CHARS}.",
            detail=detail,
        )


class UnknownAspectRatio(ImagineError):
    code = "bad_aspect_ratio"

    def __init__(self, value: str, *, detail: str | None = None) -> None:
        from bot.models import ASPECT_RATIOS

        self.value = value
        super().__init__(
            f"“{_trim(value, 20)}” isn't a supported aspect ratio. "
            f"Choose one of {', '.join(ASPECT_RATIOS)}.",
            detail=detail,
        )


class AspectRatioFlag(ImagineError):
    """`--ar` with nothing after it, or given twice."""

    code = "bad_aspect_ratio"

    def __init__(self, *, twice: bool, detail: str | None = None) -> None:
        self.twice = twice
        example = "like --ar 16:9"
        super().__init__(
            f"Give --ar only once, {example}."
            if twice
            else f"--ar needs an aspect ratio after it, {example}.",
            detail=detail,
        )


# --- bot rules -----------------------------------------------------------------------------


class UserQueueFull(ImagineError):
    code = "queue_full"
    retryable = True

    def __init__(self, jobs: int, *, detail: str | None = None) -> None:
        self.jobs = jobs
        super().__init__(
            f"You already have {plural(jobs, 'image')} in progress. "
            + (
                "Try again when it is finished."
                if jobs == 1
                else "Try again when one of them is finished."
            ),
            detail=detail,
        )


class UnknownTurn(ImagineError):
    code = "unknown_turn"

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "I can't find that image any more: it was deleted or is from before my records.",
            detail=detail,
        )


class ImageExpired(ImagineError):
    """An edit, reroll or retry needs an image whose bytes retention removed
    (`IMAGINE_RETENTION_DAYS`); the conversation's text is still there."""

    code = "image_expired"

    def __init__(self, days: int = 0, *, detail: str | None = None) -> None:
        self.days = days
        age = f" is older than {days} day{'' if days == 1 else 's'} and" if days > 0 else ""
        super().__init__(
            f"That image{age} has been cleaned up; start again with /imagine.",
            detail=detail,
        )


class NotAllowed(ImagineError):
    code = "not_allowed"

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "Only the person who asked for this image (or a moderator) can do that.",
            detail=detail,
        )


class ShuttingDown(ImagineError):
    code = "shutting_down"
    retryable = True

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "The bot is restarting. Please send that again in a moment.", detail=detail
        )


class Cancelled(ImagineError):
    code = "cancelled"

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__("Cancelled.", detail=detail)


class InternalError(ImagineError):
    """Something of ours broke: the user gets an apology, the log gets the traceback."""

    code = "internal"
    retryable = True

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "Something went wrong on my side. It has been logged; please try again.",
            detail=detail,
        )


# --- failures kept in the store ------------------------------------------------------------


def error_record(error: ImagineError) -> str:
    """How a failure is stored with its job: its code and the sentence the user sees (the
    technical detail goes to the log only)."""
    return f"{error.code}: {error.user_message}"


def _error_classes() -> dict[str, type[ImagineError]]:
    found: dict[str, type[ImagineError]] = {}
    pending: list[type[ImagineError]] = [ImagineError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def restore_error(record: str | None) -> ImagineError:
    """The error an `error_record` describes, of its own type (so `retryable` and checks
    such as `isinstance(error, Cancelled)` still hold), with the same sentence.

    A failure recorded by a process that died before showing it is shown from this."""
    code, _, message = (record or "").partition(": ")
    cls = _error_classes().get(code, InternalError)
    if not message:
        return InternalError(detail=record or "no record")
    error = cls.__new__(cls)
    ImagineError.__init__(error, message, detail=f"recorded: {record}")
    return error
