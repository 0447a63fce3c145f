"""Stable identifiers: every id in the product is a content hash, so re-running a stage on the same
input yields the same ids and Delta merges/caches line up across runs and machines."""

import hashlib
import json


def content_id(*parts: object, length: int = 16) -> str:
    """Hex sha256 of the parts (JSON-encoded, so ("a", "bc") != ("ab", "c")), truncated."""
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]
