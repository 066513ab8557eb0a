"""The lorabench exception tree.

Every error lorabench raises derives from :class:`LorabenchError`. Each carries a
stable machine-readable ``code`` (a short snake_case reason), a one-line
message, and a ``hint`` telling the user what to do about it::

    LorabenchError                      base of everything lorabench raises
    ├── ConfigError                     a setting or environment variable is invalid
    ├── MissingDependencyError          an optional package is not installed (also ImportError)
    ├── FileReadError                   a model or sidecar file could not be read as trusted facts
    │   ├── NotARegularFileError        a FIFO, socket, device, directory or symlink was given
    │   ├── FileTooLargeError           a header or metadata value exceeds a configured cap
    │   ├── InvalidHeaderError          a safetensors header breaks the format rules
    │   ├── UnsafeFormatError           a pickle-based file (never loaded)
    │   ├── UnsupportedFormatError      not a safetensors file at all
    │   └── UnstableFileError           the file changed or was truncated while it was read
    ├── CatalogError                    the catalog could not do what was asked
    │   ├── CatalogLockedError          another process held the catalog past the deadline
    │   ├── DiskFullError               not enough free disk space for a write (nothing changed)
    │   ├── NotFoundError               no catalog row has that id
    │   ├── QuerySyntaxError            a search query has bad syntax or an unknown field
    │   └── SchemaVersionError          the catalog was written by a newer lorabench
    ├── ImportRunError                  an import could not complete
    ├── SDNextError                     talking to an SD.Next (or A1111) server failed
    │   ├── ServerUnavailableError      connection refused, DNS failure, or a connect timeout
    │   ├── AuthenticationError         401: missing or wrong credentials
    │   ├── InsecureAuthError           Basic auth over plain http to a non-loopback host
    │   ├── BadRequestError             422/400: the server rejected fields of the request
    │   ├── UnknownSamplerError         the sampler name is unknown to the server
    │   ├── RateLimitedError            429: slow down (``retry_after`` seconds)
    │   ├── ModelNotLoadedError         200 with no images: the model is not loaded
    │   ├── ServerError                 5xx from the server
    │   ├── ProtocolError               malformed JSON, a wrong shape, or a bad image
    │   ├── ResponseTooLargeError       the response exceeded the size cap
    │   └── DeadlineExceededError       the call's overall deadline passed
    └── QueueError                      the generation queue could not do what was asked
        └── JobNotFoundError            no job has that id

``str(error)`` is always a single line: ``"<message> — <hint>"``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "CatalogError",
    "CatalogLockedError",
    "ConfigError",
    "DeadlineExceededError",
    "DiskFullError",
    "FileReadError",
    "FileTooLargeError",
    "ImportRunError",
    "InsecureAuthError",
    "InvalidHeaderError",
    "JobNotFoundError",
    "LorabenchError",
    "MissingDependencyError",
    "ModelNotLoadedError",
    "NotARegularFileError",
    "NotFoundError",
    "ProtocolError",
    "QuerySyntaxError",
    "QueueError",
    "RateLimitedError",
    "ResponseTooLargeError",
    "SDNextError",
    "SchemaVersionError",
    "ServerError",
    "ServerUnavailableError",
    "UnknownSamplerError",
    "UnsafeFormatError",
    "UnstableFileError",
    "UnsupportedFormatError",
]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class LorabenchError(Exception):
    """Base class of every error lorabench raises.

    Parameters
    ----------
    message:
        What went wrong, in one line.
    code:
        A stable reason code; defaults to the class's ``code``.
    hint:
        What the user can do about it; defaults to the class's ``hint``.
    """

    code: str = "error"
    hint: str = "See the lorabench README for help."

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        self.message = _one_line(message)
        if code is not None:
            self.code = code
        if hint is not None:
            self.hint = _one_line(hint)
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready ``{"code", "message", "hint"}`` mapping."""
        return {"code": self.code, "message": self.message, "hint": self.hint}


class ConfigError(LorabenchError):
    """Raised when a setting or environment variable is invalid."""

    code = "config"
    hint = "Check the lorabench settings and environment variables named in the message."


class MissingDependencyError(LorabenchError, ImportError):
    """Raised when an optional package needed for a feature is not installed."""

    code = "missing_dependency"
    hint = "Install it with: pip install lorabench (the full install includes it)."


class FileReadError(LorabenchError):
    """Raised when a file cannot be turned into trustworthy facts."""

    code = "unreadable"
    hint = "Check that the file is complete and readable."

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = path
        super().__init__(message, code=code, hint=hint)


class NotARegularFileError(FileReadError):
    """Raised for FIFOs, sockets, devices, directories and symlinks (never opened)."""

    code = "not_regular_file"
    hint = "Point lorabench at regular files; special files are skipped without being opened."


class FileTooLargeError(FileReadError):
    """Raised when a header, a metadata value or a tensor count exceeds a cap."""

    code = "too_large"
    hint = "The file exceeds a safety cap; raise the cap only if you trust the file."


class InvalidHeaderError(FileReadError):
    """Raised when a safetensors header breaks the format's rules."""

    code = "invalid_header"
    hint = "The file is damaged or not a real safetensors file; re-download it."


class UnsafeFormatError(FileReadError):
    """Raised for pickle-based files, which lorabench never loads."""

    code = "unsafe_format"
    hint = (
        "Pickle files can run code when loaded; lorabench never loads them. Convert the "
        "file to .safetensors in a sandbox you trust, or get a .safetensors release."
    )


class UnsupportedFormatError(FileReadError):
    """Raised when a file is neither safetensors nor a recognised pickle."""

    code = "unsupported_format"
    hint = "lorabench reads .safetensors LoRA files; this file is something else."


class UnstableFileError(FileReadError):
    """Raised when a file changed, grew or was truncated while it was being read."""

    code = "unstable"
    hint = "The file is still being written or was modified; try again when it is complete."


class CatalogError(LorabenchError):
    """Raised when the catalog cannot do what was asked."""

    code = "catalog"
    hint = "Check the catalog path (LORABENCH_CATALOG / LORABENCH_HOME) and that the disk is writable."


class CatalogLockedError(CatalogError):
    """Raised when another process held the catalog file past the deadline."""

    code = "catalog_locked"
    hint = "Another process is using the catalog; wait for it to finish or close it, then retry."


class DiskFullError(CatalogError):
    """Raised before a write that would not fit on the disk; the catalog is left as it was."""

    code = "disk_full"
    hint = "Free some disk space (or move the catalog with LORABENCH_CATALOG), then retry."


class NotFoundError(CatalogError):
    """Raised when no catalog row has the given id."""

    code = "not_found"
    hint = "Look the id up again with Catalog.search() or `lorabench search`."


class QuerySyntaxError(CatalogError):
    """Raised when a search query has bad syntax or names an unknown field."""

    code = "query_syntax"
    hint = "See the search syntax in the README (field:value, rating:>=4, -tag:x, is:favorite, sort:-rating)."

    def __init__(self, message: str, *, position: int | None = None, hint: str | None = None) -> None:
        self.position = position
        super().__init__(message, hint=hint)


class SchemaVersionError(CatalogError):
    """Raised when the catalog was written by a newer lorabench than this one."""

    code = "schema_version"
    hint = "Upgrade lorabench (pip install -U lorabench) to open this catalog."


class ImportRunError(LorabenchError):
    """Raised when an import run could not complete."""

    code = "import_failed"
    hint = "Fix the problem named in the message and run the import again; it resumes where it stopped."


class SDNextError(LorabenchError):
    """Raised when talking to an SD.Next (or AUTOMATIC1111) server fails."""

    code = "sdnext"
    hint = "Check that SD.Next is running and reachable at SDNEXT_URL."


class ServerUnavailableError(SDNextError):
    """Raised when the server cannot be reached (refused, DNS, connect timeout)."""

    code = "unreachable"
    hint = "Start SD.Next (or `lorabench sdnext-standin`) and check SDNEXT_URL."


class AuthenticationError(SDNextError):
    """Raised on 401: credentials are missing or wrong."""

    code = "auth"
    hint = "Set SDNEXT_USER and SDNEXT_PASSWORD to the server's --auth credentials."


class InsecureAuthError(SDNextError):
    """Raised when Basic auth would be sent in clear text to a non-loopback host."""

    code = "insecure_auth"
    hint = "Use https, a loopback address, or pass allow_insecure_auth=True if you accept the risk."


class BadRequestError(SDNextError):
    """Raised on 422/400: the server rejected fields of the request."""

    code = "bad_request"
    hint = "Fix the request fields named in the message."

    def __init__(self, message: str, *, details: object = None, hint: str | None = None) -> None:
        self.details = details
        super().__init__(message, hint=hint)


class UnknownSamplerError(SDNextError):
    """Raised when the server does not know the sampler name."""

    code = "unknown_sampler"
    hint = "List the server's samplers (client.samplers()) and use one of those names."


class RateLimitedError(SDNextError):
    """Raised on 429; ``retry_after`` holds the server's advice in seconds."""

    code = "rate_limited"
    hint = "The server asked to slow down; lorabench retries after the advised delay."

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, hint=hint)


class ModelNotLoadedError(SDNextError):
    """Raised when the server answers 200 with no images because no model is loaded."""

    code = "model_not_loaded"
    hint = "Load a checkpoint in SD.Next (or wait for it to finish loading), then retry."


class ServerError(SDNextError):
    """Raised on a 5xx answer."""

    code = "server_error"
    hint = "The server failed; check its console log. Transient errors are retried by the queue."


class ProtocolError(SDNextError):
    """Raised for malformed JSON, an unexpected shape, or an undecodable image."""

    code = "protocol"
    hint = "The server's answer was not what SD.Next sends; check the URL points at SD.Next or A1111."


class ResponseTooLargeError(SDNextError):
    """Raised when a response exceeds the size cap."""

    code = "too_large"
    hint = "The response was larger than the cap; raise max_response_bytes if you trust the server."


class DeadlineExceededError(SDNextError):
    """Raised when a call's overall deadline passes (slow or trickling server)."""

    code = "deadline"
    hint = "The server is too slow; raise the timeout or check the server's load."


class QueueError(LorabenchError):
    """Raised when the generation queue cannot do what was asked."""

    code = "queue"
    hint = "Check the queue state with `lorabench worker --status` or Queue.jobs()."


class JobNotFoundError(QueueError):
    """Raised when no job has the given id."""

    code = "job_not_found"
    hint = "List jobs with Queue.jobs() to find the right id."
