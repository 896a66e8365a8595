"""A fake Nexconn API on loopback: images/generations, images/edits and chat/completions.

It answers as the Nexconn documentation shows (base64 PNGs, OpenAI-style usage), checks the
`Authorization` header, and records every request so tests can assert the wire shape.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.scripted_json_server import Recorded, Reply, ScriptedJsonServer, b64, png

GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
CHAT = "/v1/chat/completions"


def images_answer(image: bytes | None, *, b64_json: str | None = None) -> dict[str, Any]:
    """The documented answer of /v1/images/generations and /v1/images/edits."""
    data = (
        [] if image is None and b64_json is None else [{"b64_json": b64_json or b64(image or b"")}]
    )
    return {
        "created": 1234567890,
        "data": data,
        "output_format": "png",
        "usage": {
            "total_tokens": 1524,
            "input_tokens": 234,
            "output_tokens": 1290,
            "input_tokens_details": {"text_tokens": 234, "image_tokens": 0},
        },
    }


def chat_answer(image: bytes | None, text: str = "", *, url: str | None = None) -> dict[str, Any]:
    """An OpenAI-style chat completion carrying the image in `message.images` (OpenRouter shape)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if image is not None or url is not None:
        message["images"] = [
            {
                "type": "image_url",
                "image_url": {"url": url or f"data:image/png;base64,{b64(image or b'')}"},
            }
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1234567890,
        "model": "gemini-2.5-flash-image",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1300, "completion_tokens": 1290, "total_tokens": 2590},
    }


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> Any:
    error: dict[str, Any] = {"message": message, "type": kind}
    if code is not None:
        error["code"] = code
    return {"error": error}


class FakeNexconn(ScriptedJsonServer):
    paths = frozenset({GENERATIONS, EDITS, CHAT})

    def __init__(self, api_key: str, *, scheme: str = "Bearer") -> None:
        super().__init__()
        self.expected_auth = f"{scheme} {api_key}" if scheme else api_key
        self.image = png((200, 30, 30))
        """What a normal answer serves."""
        self.text = ""

    def authorized(self, request: Recorded) -> bool:
        return request.headers.get("authorization") == self.expected_auth

    def unauthorized_reply(self) -> Reply:
        return Reply(401, error_body("Invalid API key provided", "authentication_error"))

    def default_reply(self, request: Recorded) -> Reply:
        if request.path == CHAT:
            return Reply(200, chat_answer(self.image, self.text))
        return Reply(200, images_answer(self.image))
