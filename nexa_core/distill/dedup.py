"""Near-duplicate detection: MinHash signatures + LSH banding, vectorised with numpy.

Same estimator as datasketch's MinHash LSH (word 3-gram shingles, `num_perm` universal hash
permutations, `bands` x `rows` banding), but signatures are computed for a whole chunk of texts in a
few array operations and band collisions are found with a sort instead of a Python dict per band.
Work is done in chunks, so memory is bounded by the chunk size plus 8 bytes per band per text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class MinHashConfig:
    num_perm: int = 64
    bands: int = 16
    shingle: int = 3
    threshold: float = 0.5  # estimated Jaccard a candidate must reach: the S-curve midpoint of 16x4 bands
    seed: int = 1
    chunk: int = 1024  # texts per block: keeps the (num_perm x shingles) block in cache

    @property
    def rows(self) -> int:
        return self.num_perm // self.bands


def _permutations(cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """Multiply-shift hash family: h(x) = (a*x + b) >> 32 over 64-bit words, a odd. Universal like
    datasketch's (a*x + b) mod p, without the 64-bit modulo that dominates its cost."""
    rng = np.random.default_rng(cfg.seed)
    a = rng.integers(0, 1 << 63, size=cfg.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=cfg.num_perm, dtype=np.uint64)
    return a, b


def shingle_hashes(texts: pl.Series, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat 64-bit hashes of each text's distinct word k-grams, count per text), computed in polars.
    A text shorter than k words is one shingle of all its words."""
    words = texts.str.to_lowercase().str.extract_all(r"\w+").fill_null([])
    grams = words.list.eval(pl.concat_str([pl.element().shift(-i) for i in range(k)], separator=" ").drop_nulls())
    grams = (
        pl.select(pl.when(words.list.len() >= k).then(grams).otherwise(pl.concat_list(words.list.join(" "))))
        .to_series()
        .list.unique()
    )
    flat = grams.explode().hash(seed).to_numpy()
    return flat, grams.list.len().to_numpy().astype(np.int64)


def signatures(texts: list[str] | pl.Series, cfg: MinHashConfig = MinHashConfig()) -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures."""
    texts = pl.Series(texts, dtype=pl.String)
    a, b = _permutations(cfg)
    out = np.empty((len(texts), cfg.num_perm), dtype=np.uint32)
    for start in range(0, len(texts), cfg.chunk):
        flat, lengths = shingle_hashes(texts.slice(start, cfg.chunk), cfg.shingle, cfg.seed)
        # Every shingle under every permutation at once, one permutation per row so the per-text
        # minimum runs over contiguous memory; uint64 arithmetic wraps, which the family wants.
        permuted = ((a[:, None] * flat[None, :] + b[:, None]) >> np.uint64(32)).astype(np.uint32)
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        out[start : start + len(lengths)] = np.minimum.reduceat(permuted, offsets, axis=1).T
    return out


def near_duplicates(texts: list[str] | pl.Series, cfg: MinHashConfig = MinHashConfig()) -> np.ndarray:
    """For each text, the index of an earlier text it near-duplicates, or -1. The first text of a
    group is kept; later ones point at it (or at another earlier member)."""
    n = len(texts)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    sig = signatures(texts, cfg)
    order = np.arange(n, dtype=np.int64)
    match = np.full(n, -1, dtype=np.int64)
    for band in range(cfg.bands):
        cols = sig[:, band * cfg.rows : (band + 1) * cfg.rows]
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
