"""Results cached on disk with diskcache, safely: diskcache 5.6.3 is unmaintained and its default pickling has an
open CVE (CVE-2025-69872), so nothing here is pickled.

sha256 string keys over (image bytes, prompt, model id + revision, method configs, decode length); values
are JSON bytes, never pickle (a disk class that refuses pickled rows); a private 0700 directory; a lock
around computation. Any cache failure is logged and the run goes on uncached.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import diskcache
from diskcache.core import MODE_PICKLE

log = logging.getLogger(__name__)
DEFAULT_DIR = Path(os.environ.get("EXPLORER_CACHE_DIR", Path.home() / ".cache" / "token-pruning-explorer" / "results"))


class SafeDisk(diskcache.Disk):
    """Stores only str keys and bytes values; refuses to unpickle anything it reads back."""

    def put(self, key):
        if not isinstance(key, str):
            raise TypeError("cache keys must be str")
        return super().put(key)

    def get(self, key, raw):
        if not raw:
            raise ValueError("refusing a pickled cache key")
        return super().get(key, raw)

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if not isinstance(value, bytes):
            raise TypeError("cache values must be bytes")
        return super().store(value, read, key=key)

    def fetch(self, mode, filename, value, read):
        if mode == MODE_PICKLE:
            raise ValueError("refusing a pickled cache value")
        return super().fetch(mode, filename, value, read)


def request_key(images: list[bytes], prompt: str, model: str, revision: str, configs: list[dict],
                max_new_tokens: int) -> str:
    """sha256 over everything that decides a result."""
    h = hashlib.sha256()
    for data in images:
        h.update(hashlib.sha256(data).digest())
    meta = {"prompt": prompt.strip(), "model": model, "revision": revision, "methods": configs,
            "max_new_tokens": max_new_tokens}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


class ResultCache:
    """get/put JSON results; `lock` serialises computation. Disabled (never raising) if the directory is bad."""

    def __init__(self, directory: str | os.PathLike | None = DEFAULT_DIR, size_limit: int = 2 ** 30):
        self.lock = threading.Lock()
        self.cache = None
        if directory is None:
            return
        try:
            path = Path(directory)
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)
            if path.stat().st_uid != os.getuid():
                raise PermissionError(f"{path} belongs to another user")
            self.cache = diskcache.Cache(str(path), disk=SafeDisk, size_limit=size_limit, timeout=2)
        except Exception as exc:  # noqa: BLE001 - a broken cache must never break a run
            log.warning("result cache disabled: %s", exc)

    @property
    def enabled(self) -> bool:
        return self.cache is not None

    def get(self, key: str) -> dict | None:
        if self.cache is None:
            return None
        try:
            data = self.cache.get(key)
            return json.loads(data.decode()) if isinstance(data, bytes) else None
        except Exception as exc:  # noqa: BLE001
            log.warning("result cache read failed: %s", exc)
            return None

    def put(self, key: str, value: dict) -> None:
        if self.cache is None:
            return
        try:
            self.cache.set(key, json.dumps(value).encode())
        except Exception as exc:  # noqa: BLE001
            log.warning("result cache write failed: %s", exc)
