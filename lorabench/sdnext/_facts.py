"""Typed answers of the small SD.Next / A1111 endpoints: progress, version, options and lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lorabench.sdnext._images import decode_b64
from lorabench.sdnext._parse import as_list, as_obj, fail, get_int, get_num, get_str

__all__ = [
    "Flavor",
    "LoraEntry",
    "MemoryInfo",
    "Options",
    "Progress",
    "ProgressState",
    "SDModel",
    "Sampler",
    "ServerVersion",
]

Flavor = Literal["sdnext", "a1111"]

# --------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class ProgressState:
    """The server's ``state`` object (A1111 adds ``stopping_generation``)."""

    job: str = ""
    job_count: int = 0
    job_no: int = 0
    job_timestamp: str = "0"
    sampling_step: int = 0
    sampling_steps: int = 0
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool | None = None

    @classmethod
    def from_json(cls, data: object) -> ProgressState:
        """Validate a ``state`` object."""
        d = as_obj(data, "'state'")
        stopping = d.get("stopping_generation")
        return cls(
            job=get_str(d, "job", default=""),
            job_count=get_int(d, "job_count", 0),
            job_no=get_int(d, "job_no", 0),
            job_timestamp=str(d.get("job_timestamp") or "0"),
            sampling_step=get_int(d, "sampling_step", 0),
            sampling_steps=get_int(d, "sampling_steps", 0),
            skipped=bool(d.get("skipped")),
            interrupted=bool(d.get("interrupted")),
            stopping_generation=None if stopping is None else bool(stopping),
        )


@dataclass(frozen=True)
class Progress:
    """``GET /sdapi/v1/progress``. ``idle`` follows the server's rule (SD.Next: ``job_count == 0
    and sampling_step == 0``; A1111: ``job_count == 0``). Progress is per *phase* on SD.Next:
    the only reliable completion signal is the generation's own HTTP response."""

    progress: float
    eta_relative: float
    state: ProgressState
    current_image: bytes | None
    textinfo: str | None
    id: int | str | None
    idle: bool

    @classmethod
    def from_json(cls, data: object, flavor: Flavor = "sdnext") -> Progress:
        """Validate a progress response; ``current_image`` is decoded to bytes."""
        d = as_obj(data, "the progress response")
        state = ProgressState.from_json(d.get("state") or {})
        image = d.get("current_image")
        current = None if image in (None, "") else decode_b64(image, "current_image")
        ident = d.get("id")
        if ident is not None and not isinstance(ident, int | str):
            raise fail("'id' is not an int or string")
        idle = state.job_count == 0 and (flavor == "a1111" or state.sampling_step == 0)
        return cls(
            progress=float(get_num(d, "progress", 0.0)),
            eta_relative=float(get_num(d, "eta_relative", 0.0) or 0),
            state=state,
            current_image=current,
            textinfo=get_str(d, "textinfo", nullable=True),
            id=ident,
            idle=idle,
        )


# --------------------------------------------------------------------------- server facts


@dataclass(frozen=True)
class ServerVersion:
    """What ``/sdapi/v1/version`` says; ``app`` is ``"a1111"`` when it answers 404 (A1111)."""

    app: Flavor
    version: str
    """SD.Next's commit (7 hex), or ``""`` for A1111, which does not report one over the API."""
    updated: str | None = None
    branch: str | None = None

    @classmethod
    def from_json(cls, data: object) -> ServerVersion:
        """Validate SD.Next's version object (``commit``, or ``hash`` on older builds)."""
        d = as_obj(data, "the version response")
        commit = d.get("commit") or d.get("hash") or ""
        return cls(
            app="sdnext",
            version=str(commit),
            updated=get_str(d, "updated", nullable=True),
            branch=get_str(d, "branch", nullable=True),
        )


@dataclass(frozen=True)
class Options:
    """The server's flat option mapping (``GET /sdapi/v1/options``)."""

    values: dict[str, Any]

    @property
    def samples_format(self) -> str | None:
        """The image format generations are encoded in (``jpg`` on SD.Next, ``png`` on A1111)."""
        value = self.values.get("samples_format")
        return value if isinstance(value, str) else None

    @property
    def sd_model_checkpoint(self) -> str | None:
        """The loaded checkpoint's title."""
        value = self.values.get("sd_model_checkpoint")
        return value if isinstance(value, str) else None

    def get(self, key: str, default: Any = None) -> Any:
        """One option's value."""
        return self.values.get(key, default)

    def to_payload(self) -> dict[str, Any]:
        """The mapping, ready to POST back."""
        return dict(self.values)

    @classmethod
    def from_json(cls, data: object) -> Options:
        """Validate an options mapping."""
        return cls(values=dict(as_obj(data, "the options response")))


@dataclass(frozen=True)
class SDModel:
    """One checkpoint of ``/sdapi/v1/sd-models``."""

    title: str
    model_name: str
    filename: str = ""
    type: str | None = None
    sha256: str | None = None
    hash: str | None = None

    @classmethod
    def from_json(cls, data: object) -> SDModel:
        """Validate one checkpoint entry."""
        d = as_obj(data, "a model entry")
        return cls(
            title=get_str(d, "title"),
            model_name=get_str(d, "model_name", default=""),
            filename=get_str(d, "filename", default=""),
            type=get_str(d, "type", nullable=True),
            sha256=get_str(d, "sha256", nullable=True),
            hash=get_str(d, "hash", nullable=True),
        )


@dataclass(frozen=True)
class Sampler:
    """One entry of ``/sdapi/v1/samplers`` (``aliases`` only on A1111)."""

    name: str
    aliases: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: object) -> Sampler:
        """Validate one sampler entry."""
        d = as_obj(data, "a sampler entry")
        aliases = d.get("aliases") or []
        return cls(
            name=get_str(d, "name"),
            aliases=[str(a) for a in as_list(aliases, "'aliases'")],
            options=dict(as_obj(d.get("options") or {}, "'options'")),
        )


@dataclass(frozen=True)
class LoraEntry:
    """One LoRA of ``/sdapi/v1/loras``; ``name`` is the token for ``<lora:NAME:W>``."""

    name: str
    alias: str
    path: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def tag(self, weight: float = 1.0) -> str:
        """The portable prompt tag ``<lora:NAME:W>``."""
        return f"<lora:{self.name}:{weight:g}>"

    @classmethod
    def from_json(cls, data: object) -> LoraEntry:
        """Validate one LoRA entry."""
        d = as_obj(data, "a LoRA entry")
        name = get_str(d, "name")
        metadata = d.get("metadata") or {}
        return cls(
            name=name,
            alias=get_str(d, "alias", default=name) or name,
            path=get_str(d, "path", default=""),
            metadata=dict(as_obj(metadata, "'metadata'")),
        )


@dataclass(frozen=True)
class MemoryInfo:
    """``/sdapi/v1/memory``: RAM figures and the raw CUDA block (``cuda_available`` False without one)."""

    ram_free: float | None
    ram_used: float | None
    ram_total: float | None
    cuda_available: bool
    cuda: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: object) -> MemoryInfo:
        """Validate a memory response."""
        d = as_obj(data, "the memory response")
        ram = as_obj(d.get("ram") or {}, "'ram'")
        cuda = as_obj(d.get("cuda") or {}, "'cuda'")
        return cls(
            ram_free=get_num(ram, "free"),
            ram_used=get_num(ram, "used"),
            ram_total=get_num(ram, "total"),
            cuda_available=bool(cuda) and "error" not in cuda,
            cuda=dict(cuda),
        )
