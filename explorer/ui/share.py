"""Shareable links: a comparison's inputs, uploaded images and results stored server-side in the results cache
under a random-looking id (sha256 of the content); `?share=<id>` on the page URL reopens them."""
from __future__ import annotations

import base64
import hashlib
import json
import re

from ..settings import SETTINGS

PREFIX = "share:"
ID = re.compile(r"^[0-9a-f]{24}$")
FIELDS = ("prompt", "methods", "keep", "budget_unit", "layer", "alpha", "max_new_tokens", "seed", "model",
          "reference", "knobs", "convention", "ranking")
ADDED = {"ranking": SETTINGS.ranking}  # fields added after links were first shared: what those runs used


def pack(inputs: dict, payload: dict, images: list[bytes]) -> tuple[str, dict]:
    """(id, record) for the cache: the inputs named in FIELDS, the results JSON and each image file's bytes."""
    record = {"inputs": {k: inputs.get(k) for k in FIELDS}, "payload": payload,
              "images": [base64.b64encode(b).decode() for b in images]}
    share_id = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]
    return share_id, record


def inputs_of(record: dict) -> list:
    """The stored inputs in FIELDS order; a field an older record lacks gets the value those runs used."""
    inputs = record["inputs"]
    return [inputs[k] if k in inputs else ADDED.get(k) for k in FIELDS]


def images_of(record: dict) -> list[bytes]:
    return [base64.b64decode(b) for b in record["images"]]


def valid(share_id) -> bool:
    return isinstance(share_id, str) and bool(ID.match(share_id))
