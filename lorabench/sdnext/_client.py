"""``SDNextClient``: an async client for SD.Next (and AUTOMATIC1111) servers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from lorabench.errors import InsecureAuthError, ModelNotLoadedError, ProtocolError
from lorabench.sdnext._facts import Flavor, LoraEntry, MemoryInfo, Options, Progress, Sampler, SDModel, ServerVersion
from lorabench.sdnext._http import HttpLayer, Reply, Secret, install_log_filter, is_loopback, resolve_server
from lorabench.sdnext._models import GenerationResult, Img2ImgRequest, Txt2ImgRequest

__all__ = ["SDNextClient"]


class SDNextClient:
    """Async client for the SD.Next HTTP API that also speaks to AUTOMATIC1111.

    Parameters
    ----------
    base_url:
        The server, e.g. ``http://127.0.0.1:7860``; default ``SDNEXT_URL`` or that address.
        Credentials in the URL are taken out (used only when ``auth`` is not given) and
        never stored in it.
    auth:
        ``(user, password)`` for HTTP Basic; default ``SDNEXT_USER`` / ``SDNEXT_PASSWORD``.
        Sent only to loopback hosts or over https unless ``allow_insecure_auth=True``
        (:class:`~lorabench.errors.InsecureAuthError` at construction otherwise).
    timeout:
        Overall deadline of one call in seconds (connect, send, wait, read, decode);
        :class:`~lorabench.errors.DeadlineExceededError` when it passes. A generation waits
        for every generation queued before it on the server, so keep this generous.
    transport:
        An ``httpx.AsyncBaseTransport`` (e.g. ``httpx.MockTransport``) for tests.
    max_response_bytes:
        Cap on one response body (decoded); bigger ones raise
        :class:`~lorabench.errors.ResponseTooLargeError` without being read.

    The first call that needs it asks ``/sdapi/v1/version`` which server this is
    (:meth:`detect`, cached): SD.Next answers with its version object, A1111 with 404.
    Generation requests then carry that server's defaults for fields left ``None``, its
    sampler spelling, and every core value explicitly.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        auth: tuple[str, str] | None = None,
        timeout: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = 256 * 2**20,
        allow_insecure_auth: bool = False,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be positive")
        install_log_filter()
        url, creds = resolve_server(base_url, auth)
        if creds and url.scheme == "http" and not is_loopback(url.host) and not allow_insecure_auth:
            raise InsecureAuthError(
                f"Refusing to send Basic auth in clear text to {url.host}: use https or a loopback address"
            )
        self._base_url = str(url).rstrip("/")
        self._user = creds[0] if creds else None
        self._password = Secret(creds[1]) if creds else None
        self._http = HttpLayer(
            url, creds, timeout=float(timeout), transport=transport, max_response_bytes=int(max_response_bytes)
        )
        self._server: ServerVersion | None = None
        self._detect_lock = asyncio.Lock()
        self._interrupts = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SDNextClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        await self._http.aclose()

    def __repr__(self) -> str:
        auth = "***" if self._password is not None else None
        return f"SDNextClient(base_url={self._base_url!r}, auth={auth})"

    @property
    def base_url(self) -> str:
        """The server URL (never with credentials)."""
        return self._base_url

    @property
    def server(self) -> ServerVersion | None:
        """What :meth:`detect` found, or ``None`` before the first call."""
        return self._server

    # ------------------------------------------------------------------ plumbing

    async def _json(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        deadline: float | None = None,
    ) -> Any:
        reply = await self._http.call(method, path, body=body, params=params, deadline=deadline)
        reply.raise_for_status()
        return reply.json()

    async def _flavor(self) -> Flavor:
        return (await self.detect()).app

    # ------------------------------------------------------------------ server identity

    async def detect(self) -> ServerVersion:
        """Which server this is (asks ``/sdapi/v1/version`` once, then cached)."""
        if self._server is None:
            async with self._detect_lock:
                if self._server is None:
                    self._server = await self.version()
        return self._server

    async def version(self) -> ServerVersion:
        """Ask ``/sdapi/v1/version`` now: SD.Next's object, or ``app="a1111"`` on 404 / another shape."""
        reply: Reply = await self._http.call("GET", "/sdapi/v1/version")
        if reply.status == 404:
            found = ServerVersion(app="a1111", version="")
        else:
            reply.raise_for_status()
            data = reply.json()
            found = ServerVersion.from_json(data) if _looks_like_sdnext(data) else ServerVersion("a1111", "")
        self._server = found
        return found

    # ------------------------------------------------------------------ generation

    async def txt2img(self, request: Txt2ImgRequest, *, timeout: float | None = None) -> GenerationResult:
        """Generate images from text. ``timeout`` overrides the client's deadline for this call.

        Raises :class:`~lorabench.errors.ModelNotLoadedError` when the server answers 200 with
        ``info == ""`` or without images (unless this client interrupted or skipped meanwhile).
        """
        return await self._generate("/sdapi/v1/txt2img", request, timeout)

    async def img2img(self, request: Img2ImgRequest, *, timeout: float | None = None) -> GenerationResult:
        """Generate images from init images and text; see :meth:`txt2img`."""
        return await self._generate("/sdapi/v1/img2img", request, timeout)

    async def _generate(self, path: str, request: Txt2ImgRequest, timeout: float | None) -> GenerationResult:
        if not isinstance(request, Txt2ImgRequest):
            raise TypeError("request must be a Txt2ImgRequest or Img2ImgRequest")
        payload = request.to_payload(await self._flavor())
        before = self._interrupts
        data = await self._json("POST", path, body=payload, deadline=timeout)
        result = GenerationResult.from_json(data, interrupted=self._interrupts != before)
        if not result.info:
            raise ModelNotLoadedError(
                f"POST {path} answered 200 with an empty info: nothing was processed (model not loaded, "
                "still loading, or an unknown sd_model_checkpoint)"
            )
        if not result.images and request.send_images and not result.interrupted:
            raise ModelNotLoadedError(f"POST {path} answered 200 without images: nothing was generated")
        return result

    async def progress(self, skip_current_image: bool = True) -> Progress:
        """The server's progress; phases flicker on SD.Next (only the generation's response is final)."""
        params = {"skip_current_image": "true" if skip_current_image else "false"}
        data = await self._json("GET", "/sdapi/v1/progress", params=params)
        return Progress.from_json(data, await self._flavor())

    async def interrupt(self) -> None:
        """Stop the running generation (SD.Next answers 204, A1111 200; both are success).

        An interrupt sent while the server is idle is lost (the next job resets it).
        """
        self._interrupts += 1
        reply = await self._http.call("POST", "/sdapi/v1/interrupt")
        reply.raise_for_status()

    async def skip(self) -> None:
        """Skip the current ``n_iter`` iteration of the running generation."""
        self._interrupts += 1
        reply = await self._http.call("POST", "/sdapi/v1/skip")
        reply.raise_for_status()

    # ------------------------------------------------------------------ options and lists

    async def get_options(self) -> Options:
        """The server's options."""
        return Options.from_json(await self._json("GET", "/sdapi/v1/options"))

    async def set_options(self, values: Mapping[str, Any]) -> dict[str, bool]:
        """Set options; returns ``{key: updated}`` (SD.Next answers 200 even for unknown keys,
        reporting ``False``; A1111 reports nothing, so every key reads ``True``).

        Setting ``sd_model_checkpoint`` reloads the model synchronously on the server.
        """
        sent = dict(values)
        data = await self._json("POST", "/sdapi/v1/options", body=sent)
        if data is None:
            return dict.fromkeys(sent, True)
        updated = data.get("updated") if isinstance(data, dict) else None
        if not isinstance(updated, list):
            raise ProtocolError("POST /sdapi/v1/options: unexpected answer shape")
        result: dict[str, bool] = {}
        for item in updated:
            if isinstance(item, dict):
                result.update({str(k): bool(v) for k, v in item.items()})
        return result

    async def sd_models(self) -> list[SDModel]:
        """The checkpoints the server knows."""
        return [SDModel.from_json(d) for d in _as_list(await self._json("GET", "/sdapi/v1/sd-models"), "sd-models")]

    async def samplers(self) -> list[Sampler]:
        """The server's samplers, spelled its way."""
        return [Sampler.from_json(d) for d in _as_list(await self._json("GET", "/sdapi/v1/samplers"), "samplers")]

    async def loras(self) -> list[LoraEntry]:
        """The LoRAs in the server's LoRA folder (``name`` is the prompt-tag token)."""
        return [LoraEntry.from_json(d) for d in _as_list(await self._json("GET", "/sdapi/v1/loras"), "loras")]

    async def refresh_loras(self) -> None:
        """Ask the server to rescan its LoRA folder."""
        reply = await self._http.call("POST", "/sdapi/v1/refresh-loras")
        reply.raise_for_status()
        if reply.body:
            reply.json()  # must at least be JSON (a dict on SD.Next, null on A1111)

    async def memory(self) -> MemoryInfo:
        """RAM and CUDA memory figures."""
        return MemoryInfo.from_json(await self._json("GET", "/sdapi/v1/memory"))


def _as_list(data: Any, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise ProtocolError(f"GET /sdapi/v1/{what}: expected a list, got {type(data).__name__}")
    return data


def _looks_like_sdnext(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    app = str(data.get("app") or "").lower().replace(" ", "")
    return app in ("sd.next", "sdnext") or (not app and isinstance(data.get("commit") or data.get("hash"), str))
