"""Downloading the images people attach on Slack, safely.

`url_private` needs the bot token as a Bearer header. Without the `files:read` scope Slack
answers with its HTML login page *and status 200*, so the bytes decide, not the status:
`image_from_upload` refuses anything that is not an image and the admin log says which
scope is probably missing. Metadata (type, size, count) is checked before downloading, the
size again while streaming, and the token is only ever sent to Slack's own hosts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlparse

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.convert import FileRef
from bot.errors import ImagineError, NotAnImage
from bot.inputs import check_attachments, image_from_upload, read_capped
from bot.models import Image

log = logging.getLogger(__name__)

SLACK_FILE_HOSTS = ("slack.com", "slack-edge.com", "slack-gov.com", "slack-files.com")
CHUNK = 64 * 1024


class DownloadFailed(ImagineError):
    code = "download_failed"
    retryable = True

    def __init__(self, name: str, *, detail: str | None = None) -> None:
        super().__init__(
            f"I couldn't download “{name}” from Slack. Please attach it again.", detail=detail
        )


class SlackFiles:
    """Turns file metadata from an event into checked `Image`s."""

    def __init__(
        self, client: AsyncWebClient, token: str, api_base: str, *, timeout: float = 30.0
    ) -> None:
        self.client = client
        self._token = token
        self._api_host = urlparse(api_base).hostname or ""
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def images(self, files: Sequence[FileRef]) -> tuple[Image, ...]:
        """Check every file's metadata first, then download them one by one."""
        files = [await self._complete(f) for f in files]
        check_attachments([(f.name, f.mimetype, f.size) for f in files])
        return tuple([await self._download(f) for f in files])

    def _trusted(self, url: str) -> bool:
        parsed = urlparse(url)
        host = (parsed.hostname or "").lower()
        if parsed.scheme not in ("https", "http") or not host:
            return False
        if host == self._api_host:
            return True
        return parsed.scheme == "https" and any(
            host == h or host.endswith("." + h) for h in SLACK_FILE_HOSTS
        )

    async def _complete(self, ref: FileRef) -> FileRef:
        """Slack Connect files come as stubs (`file_access: check_file_info`): ask files.info."""
        if ref.url or not ref.id:
            return ref
        try:
            response = await self.client.files_info(file=ref.id)
        except SlackApiError as exc:
            raise DownloadFailed(ref.name, detail=f"files.info {ref.id}: {exc}") from None
        info = response.get("file")
        return FileRef.of(info) if isinstance(info, dict) else ref

    async def _download(self, ref: FileRef) -> Image:
        if not ref.url or not self._trusted(ref.url):
            raise DownloadFailed(ref.name, detail=f"no trusted download URL for file {ref.id}")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._session.get(ref.url, headers=headers) as response:
                if response.status != 200:
                    raise DownloadFailed(ref.name, detail=f"HTTP {response.status} for {ref.id}")
                content_type = response.headers.get("Content-Type", "")
                data = await read_capped(response.content.iter_chunked(CHUNK))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DownloadFailed(ref.name, detail=f"{type(exc).__name__} for {ref.id}") from None
        try:
            return await image_from_upload(data, ref.name)
        except NotAnImage:
            if "html" in content_type.lower() or data.lstrip()[:5].lower() in (b"<!doc", b"<html"):
                log.warning(
                    "Slack answered the download of file %s with an HTML page, not the file: "
                    "the app probably lacks the files:read scope (add it and reinstall the app)",
                    ref.id,
                )
            raise
