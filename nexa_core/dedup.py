"""Near-duplicate detection: MinHash signatures + LSH banding, vectorised with numpy.

Same estimator as datasketch's MinHash LSH (word 3-gram shingles, `num_perm` universal hash
permutations, `bands` x `rows` banding), but signatures are computed for a whole chunk of texts in a
few array operations and band collisions are found with a sort instead of a Python dict per band.
Work is done in chunks, so memory is bounded by the chunk size plus 8 bytes per band per text.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+")
_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class MinHashConfig:
    num_perm: int = 64
    bands: int = 16
    shingle: int = 3
    threshold: float = 0.5  # estimated Jaccard a candidate must reach: the S-curve midpoint of 16x4 bands
    seed: int = 1
    chunk: int = 4096

    @property
    def rows(self) -> int:
        return self.num_perm // self.bands


def _permutations(cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(cfg.seed)
    a = rng.randint(1, (1 << 31) - 1, size=cfg.num_perm, dtype=np.int64).astype(np.uint64)
    b = rng.randint(0, (1 << 31) - 1, size=cfg.num_perm, dtype=np.int64).astype(np.uint64)
    return a, b


def shingle_hashes(text: str, k: int) -> list[int]:
    words = _WORD.findall(text.lower())
    if len(words) < k:
        words = [" ".join(words)]
        k = 1
    grams = {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}
    return [zlib.crc32(g.encode()) for g in grams]


def signatures(texts: list[str], cfg: MinHashConfig = MinHashConfig()) -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures."""
    a, b = _permutations(cfg)
    out = np.empty((len(texts), cfg.num_perm), dtype=np.uint32)
    for start in range(0, len(texts), cfg.chunk):
        batch = [shingle_hashes(t, cfg.shingle) for t in texts[start:start + cfg.chunk]]
        lengths = np.fromiter((len(h) for h in batch), dtype=np.int64, count=len(batch))
        flat = np.fromiter((x for h in batch for x in h), dtype=np.uint64, count=int(lengths.sum()))
        # (a*x + b) mod p, truncated to 32 bits, for every shingle and permutation at once.
        permuted = ((flat[:, None] * a[None, :] + b[None, :]) % _MERSENNE) & _MAX32
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        out[start:start + len(batch)] = np.minimum.reduceat(permuted, offsets, axis=0)
    return out


def near_duplicates(texts: list[str], cfg: MinHashConfig = MinHashConfig()) -> np.ndarray:
    """For each text, the index of an earlier text it near-duplicates, or -1. The first text of a
    group is kept; later ones point at it (or at another earlier member)."""
    n = len(texts)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    sig = signatures(texts, cfg)
    order = np.arange(n, dtype=np.int64)
    match = np.full(n, -1, dtype=np.int64)
    for band in range(cfg.bands):
        cols = sig[:, band * cfg.rows:(band + 1) * cfg.rows]
        key = np.ascontiguousarray(cols).view(np.dtype((np.void, cols.dtype.itemsize * cfg.rows))).ravel()
        # Stable sort by bucket key; the first of each run is the earliest text in that bucket.
        idx = np.argsort(key, kind="stable")
        sorted_key = key[idx]
        new_run = np.ones(n, dtype=bool)
        new_run[1:] = sorted_key[1:] != sorted_key[:-1]
        first = idx[np.maximum.accumulate(np.where(new_run, order, 0))]
        candidate = np.empty(n, dtype=np.int64)
        candidate[idx] = first
        hit = (candidate != order) & (match < 0)
        if hit.any():
            # Verify with the signature estimate of Jaccard, as LSH only proposes candidates.
            similar = (sig[hit] == sig[candidate[hit]]).mean(axis=1) >= cfg.threshold
            rows = np.flatnonzero(hit)[similar]
            match[rows] = candidate[rows]
    return match
