"""The sentences of refusals a provider can answer with (issue 9), and how they are kept."""

from __future__ import annotations

import pytest

from bot import errors

SENTENCES: list[tuple[errors.ImagineError, str]] = [
    (
        errors.ModelRefused(),
        "The image model refused this request. "
        "Asking again won't change that: try a different prompt or image.",
    ),
    (
        errors.ModelRefused("the result would copy existing work too closely"),
        "The image model refused this request: the result would copy existing work too "
        "closely. Asking again won't change that: try a different prompt or image.",
    ),
    (
        errors.ProviderAccountBlocked(detail="finishReason PUP_LIMITED_DISABLED"),
        "The image provider has restricted the bot's account. "
        "An admin needs to check the provider account.",
    ),
    (
        errors.TooManyImagesForEdit(3, 3),
        "This edit sends the previous image along with yours, so at most 2 new images fit "
        "(you attached 3). Attach fewer images.",
    ),
    (
        errors.TooManyImagesForEdit(2, 2),
        "This edit sends the previous image along with yours, so at most 1 new image fits "
        "(you attached 2). Attach fewer images.",
    ),
]


@pytest.mark.parametrize(("error", "sentence"), SENTENCES, ids=lambda v: type(v).__name__)
def test_every_refusal_has_its_sentence(error: errors.ImagineError, sentence: str) -> None:
    assert error.user_message == sentence
    assert len(error.user_message) < 2000


@pytest.mark.parametrize(
    "error",
    [errors.ModelRefused("x"), errors.ProviderAccountBlocked(), errors.TooManyImagesForEdit(3, 3)],
    ids=lambda v: type(v).__name__,
)
def test_refusals_are_not_retryable_and_survive_the_store(error: errors.ImagineError) -> None:
    """Retrying cannot help: the same request is refused again (or the account must be fixed
    first). A recorded failure comes back as the same type with the same sentence."""
    assert error.retryable is False
    restored = errors.restore_error(errors.error_record(error))
    assert type(restored) is type(error)
    assert restored.user_message == error.user_message


def test_the_account_detail_stays_in_the_log() -> None:
    error = errors.ProviderAccountBlocked(detail="finishReason PUP_LIMITED_DISABLED")
    assert "PUP" not in error.user_message
    assert "PUP_LIMITED_DISABLED" in str(error)
