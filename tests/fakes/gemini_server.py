"""A fake Google Gemini API on loopback: `POST /v1beta/models/{model}:generateContent`.

Answers are camelCase as the REST API sends them; an unknown key gets Google's 400
"API key not valid"; every request is recorded for wire-shape assertions.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.scripted_json_server import Recorded, Reply, ScriptedJsonServer, b64, png

MODEL = "gemini-2.5-flash-image"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"


def image_part(image: bytes, signature: str | None = None, **extra: Any) -> dict[str, Any]:
    part: dict[str, Any] = {"inlineData": {"mimeType": "image/png", "data": b64(image)}}
    if signature is not None:
        part["thoughtSignature"] = signature
    return {**part, **extra}


def text_part(text: str, signature: str | None = None, **extra: Any) -> dict[str, Any]:
    part: dict[str, Any] = {"text": text}
    if signature is not None:
        part["thoughtSignature"] = signature
    return {**part, **extra}


def answer(parts: list[dict[str, Any]] | None, finish: str = "STOP") -> dict[str, Any]:
    """A generateContent answer with one candidate."""
    candidate: dict[str, Any] = {"finishReason": finish, "index": 0}
    if parts is not None:
        candidate["content"] = {"role": "model", "parts": parts}
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": 12,
            "candidatesTokenCount": 1290,
            "totalTokenCount": 1302,
        },
        "modelVersion": MODEL,
        "responseId": "fake-response",
    }


def error_body(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


API_KEY_INVALID = error_body(
    400,
    "INVALID_ARGUMENT",
    "API key not valid. Please pass a valid API key.",
    details=[
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
        }
    ],
)


class FakeGemini(ScriptedJsonServer):
    paths = frozenset({GENERATE})

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.image = png((30, 30, 200))
        self.text = "Here is your image."

    def authorized(self, request: Recorded) -> bool:
        return request.headers.get("x-goog-api-key") == self.api_key

    def unauthorized_reply(self) -> Reply:
        return Reply(400, API_KEY_INVALID)

    def default_reply(self, request: Recorded) -> Reply:
        return Reply(200, answer([text_part(self.text), image_part(self.image)]))
