"""Cached folder listings, so absent sidecar candidates cost no system call."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

__all__ = ["names_in"]

_LISTINGS: OrderedDict[str, tuple[tuple[int, int, int], frozenset[str]]] = OrderedDict()
_LISTINGS_LOCK = threading.Lock()
_SETTLED_NS = 2_000_000_000  # folders changed in the last 2 s are listed afresh (coarse FAT/exFAT clocks)


def names_in(folder: Path) -> frozenset[str] | None:
    """The names in ``folder``, cached while the folder's mtime is unchanged (``None`` if unlistable).

    Looking names up here saves one ``lstat`` per absent sidecar candidate, which is most of
    them; a folder's mtime changes whenever a name is added, removed or renamed in it.
    """
    key_path = os.fspath(folder)
    try:
        st = os.stat(key_path)
    except OSError:
        return None
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    with _LISTINGS_LOCK:
        hit = _LISTINGS.get(key_path)
        if hit is not None and hit[0] == key:
            _LISTINGS.move_to_end(key_path)
            return hit[1]
    try:
        names = frozenset(os.listdir(key_path))
    except OSError:
        return None
    if time.time_ns() - st.st_mtime_ns > _SETTLED_NS:
        with _LISTINGS_LOCK:
            _LISTINGS[key_path] = (key, names)
            while len(_LISTINGS) > 256:
                _LISTINGS.popitem(last=False)
    return names
