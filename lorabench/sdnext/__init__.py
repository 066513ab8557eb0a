"""Talking to SD.Next (and AUTOMATIC1111): an async client and a faithful local stand-in server.

>>> from lorabench.sdnext import SDNextClient, StandinServer, Txt2ImgRequest
>>> with StandinServer(lora_dir="loras") as srv:                      # doctest: +SKIP
...     async with SDNextClient(srv.url) as sd:
...         result = await sd.txt2img(Txt2ImgRequest(prompt="a cat <lora:style:0.8>", seed=1))
"""

from lorabench.sdnext._client import SDNextClient
from lorabench.sdnext._facts import (
    LoraEntry,
    MemoryInfo,
    Options,
    Progress,
    ProgressState,
    Sampler,
    SDModel,
    ServerVersion,
)
from lorabench.sdnext._images import GeneratedImage
from lorabench.sdnext._models import FLAVOR_DEFAULTS, GenerationResult, Img2ImgRequest, Txt2ImgRequest, map_sampler
from lorabench.sdnext._standin import FAULTS, StandinServer

__all__ = [
    "FAULTS",
    "FLAVOR_DEFAULTS",
    "GeneratedImage",
    "GenerationResult",
    "Img2ImgRequest",
    "LoraEntry",
    "MemoryInfo",
    "Options",
    "Progress",
    "ProgressState",
    "SDModel",
    "SDNextClient",
    "Sampler",
    "ServerVersion",
    "StandinServer",
    "Txt2ImgRequest",
    "map_sampler",
]
