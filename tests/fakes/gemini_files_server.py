"""The fake Gemini API with Google's Files API: resumable uploads, file lifetimes, and the
403 Google answers when a request names a file it no longer has.

- `POST /upload/v1beta/files` with `X-Goog-Upload-Protocol: resumable` and
  `X-Goog-Upload-Command: start` → an `X-Goog-Upload-URL` on this server;
- `POST` there with `X-Goog-Upload-Command: upload, finalize`, `X-Goog-Upload-Offset: 0` and
  the bytes → `{"file": {name, uri, mimeType, sizeBytes, state, expirationTime, …}}`;
- `GET /v1beta/files/{id}` → the file;
- `generateContent` naming a `fileData.fileUri` that is unknown or expired → 403
  PERMISSION_DENIED, as Google answers.

Every generateContent model path is served (`/v1beta/models/*:generateContent`).

A gateway mounted under a path (`prefix="/gemini"`: `{base}/gemini/v1beta/…`) answers only
under it; a request elsewhere is kept in `strays` and answered 404. Its `X-Goog-Upload-URL`
names `upload_origin` (say Google's, as a gateway passing Google's answer through would),
or by default this server under the prefix.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.gemini_server import FakeGemini, error_body
from tests.fakes.scripted_json_server import Recorded

UPLOAD = "/upload/v1beta/files"


@dataclass
class StoredFile:
    name: str
    uri: str
    mime: str
    data: bytes
    expires_at: float

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def rfc3339(moment: float) -> str:
    """Google's timestamp shape, nanoseconds and all."""
    when = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}123Z"


def file_json(stored: StoredFile) -> dict[str, Any]:
    return {
        "name": stored.name,
        "displayName": "upload",
        "mimeType": stored.mime,
        "sizeBytes": str(len(stored.data)),
        "createTime": rfc3339(time.time()),
        "updateTime": rfc3339(time.time()),
        "expirationTime": rfc3339(stored.expires_at),
        "sha256Hash": "",
        "uri": stored.uri,
        "state": "ACTIVE",
        "source": "UPLOADED",
    }


class FakeGeminiFiles(FakeGemini):
    def __init__(
        self,
        api_key: str,
        *,
        lifetime: float = 48 * 3600.0,
        prefix: str = "",
        upload_origin: str | None = None,
    ) -> None:
        super().__init__(api_key)
        self.lifetime = lifetime
        self.prefix = prefix.rstrip("/")
        self.upload_origin = upload_origin
        self.strays: list[Recorded] = []
        """Requests outside the prefix (answered 404)."""
        self.files: dict[str, StoredFile] = {}
        self.starts: list[Recorded] = []
        self.finishes: list[Recorded] = []
        self.generations: list[Recorded] = []
        self.uploads: list[StoredFile] = []
        """Every file uploaded, in order (those Google dropped since included)."""
        self._sessions: dict[str, tuple[int, str]] = {}
        self._ids = itertools.count(1)

    def drop_all(self) -> None:
        """Google forgets every file (they expired, or were deleted)."""
        self.files.clear()

    def uri_of(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        [uri] = [f.uri for f in self.files.values() if f.sha256 == sha]
        return uri

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        recorded = Recorded(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=_json(raw),
            raw=raw,
        )
        path = request.path
        if self.prefix:
            if not path.startswith(f"{self.prefix}/"):
                self.strays.append(recorded)
                return _json_response(404, error_body(404, "NOT_FOUND", f"no route {path}"))
            path = path.removeprefix(self.prefix)
        if path == UPLOAD:
            return self._upload(request, recorded)
        if path.startswith("/v1beta/files/") and request.method == "GET":
            stored = self.files.get(path.removeprefix("/v1beta/"))
            if stored is None:
                return _json_response(404, error_body(404, "NOT_FOUND", "File not found."))
            return _json_response(200, file_json(stored))
        if path.endswith(":generateContent"):
            self.generations.append(recorded)
            missing = self._missing_files(recorded.json) if self.authorized(recorded) else None
            if missing is not None:
                self.requests.append(recorded)
                message = (
                    f"You do not have permission to access the File {missing} or it may not exist."
                )
                return _json_response(403, error_body(403, "PERMISSION_DENIED", message))
            self.paths = frozenset({*self.paths, request.path})
        return await super()._handle(request)

    def _missing_files(self, body: Any) -> str | None:
        """The first file the body names that this server does not hold (alive)."""
        now = time.time()
        for content in body.get("contents", []) if isinstance(body, dict) else []:
            for part in content.get("parts", []):
                data = part.get("fileData") or part.get("file_data")
                if data is None:
                    continue
                uri = data.get("fileUri") or data.get("file_uri")
                match = [f for f in self.files.values() if f.uri == uri and f.expires_at > now]
                if not match:
                    return str(uri).rsplit("/", 1)[-1]
        return None

    def _upload(self, request: web.Request, recorded: Recorded) -> web.StreamResponse:
        if recorded.headers.get("x-goog-api-key") != self.api_key:
            return _json_response(400, error_body(400, "INVALID_ARGUMENT", "API key not valid."))
        command = recorded.headers.get("x-goog-upload-command", "")
        if command == "start":
            self.starts.append(recorded)
            if recorded.headers.get("x-goog-upload-protocol") != "resumable":
                return _json_response(400, error_body(400, "INVALID_ARGUMENT", "not resumable"))
            session = f"s{next(self._ids)}"
            length = int(recorded.headers["x-goog-upload-header-content-length"])
            mime = recorded.headers["x-goog-upload-header-content-type"]
            self._sessions[session] = (length, mime)
            origin = self.upload_origin or f"{self.base_url}{self.prefix}"
            url = f"{origin}{UPLOAD}?upload_id={session}&upload_protocol=resumable"
            return web.Response(
                status=200,
                body=b"",
                headers={"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"},
            )
        self.finishes.append(recorded)
        session = request.query.get("upload_id", "")
        if session not in self._sessions or command != "upload, finalize":
            return _json_response(400, error_body(400, "INVALID_ARGUMENT", "bad upload"))
        if recorded.headers.get("x-goog-upload-offset") != "0":
            return _json_response(400, error_body(400, "INVALID_ARGUMENT", "bad offset"))
        length, mime = self._sessions.pop(session)
        if length != len(recorded.raw):
            return _json_response(400, error_body(400, "INVALID_ARGUMENT", "length mismatch"))
        ident = f"f{next(self._ids)}x"
        stored = StoredFile(
            name=f"files/{ident}",
            uri=f"{self.base_url}/v1beta/files/{ident}",
            mime=mime,
            data=recorded.raw,
            expires_at=time.time() + self.lifetime,
        )
        self.files[stored.name] = stored
        self.uploads.append(stored)
        body = json.dumps({"file": file_json(stored)}).encode()
        return web.Response(
            status=200,
            body=body,
            headers={"Content-Type": "application/json", "X-Goog-Upload-Status": "final"},
        )


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _json_response(status: int, body: Any) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
