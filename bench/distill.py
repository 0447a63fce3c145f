"""Filter + dedup throughput on synthetic pairs, against datasketch's MinHash LSH used directly.

Usage: python bench/distill.py [--sizes 25000 50000 100000] [--smoke]

Each (method, size) runs in a fresh subprocess so peak RSS is its own; "over the loaded input" is
the peak minus the peak reached once the input frames were built, i.e. the method's working memory.
The corpus has 20% planted
near duplicates (one word of an earlier pair replaced); recall is the share of them flagged.
Both sides use the same shingles (word 3-grams), 64 permutations and 16 bands x 4 rows.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def corpus(n: int, seed: int = 0):
    """n pairs: (question, answer, planted_duplicate_of or -1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = np.array([f"term{i}" for i in range(20000)])
    n_base = int(n * 0.8)
    pairs = []
    for _ in range(n_base):
        words = rng.choice(vocab, 24)
        pairs.append((f"What does {' '.join(words[:10])} describe?", " ".join(words[10:]) + ".", -1))
    for _ in range(n - n_base):
        src = int(rng.integers(n_base))
        q, a, _ = pairs[src]
        words = a.split()
        words[int(rng.integers(len(words)))] = "altered"
        pairs.append((q, " ".join(words), src))
    order = rng.permutation(n)
    # Duplicates must come after their source so "keep the first" is well defined: sort sources first.
    order = sorted(range(n), key=lambda i: (pairs[i][2] >= 0, order[i]))
    return [pairs[i] for i in order]


def run_nexa(n: int) -> dict:
    import polars as pl

    from nexa_core import schemas
    from nexa_core.distill.filters import filter_pairs

    pairs = corpus(n)
    per = 4
    outputs, inputs = [], []
    for r in range(0, n, per):
        chunk = pairs[r : r + per]
        rid = f"r{r}"
        passage = " ".join(f"{q} {a}" for q, a, _ in chunk)
        inputs.append(
            {
                "domain": "bench",
                "request_id": rid,
                "doc_id": f"d{r}",
                "passage_id": rid,
                "topic": "t",
                "source_path": "bench",
                "passage": passage,
                "template_name": "t",
                "template_hash": "h",
                "messages": "[]",
            }
        )
        outputs.append(
            {
                "domain": "bench",
                "request_id": rid,
                "request_hash": rid,
                "model": "m",
                "backend": "b",
                "response": json.dumps({"pairs": [{"question": q, "answer": a} for q, a, _ in chunk]}),
                "finish_reason": "stop",
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "latency_s": 0.0,
                "cost_usd": 0.0,
                "from_cache": False,
            }
        )
    outputs = pl.DataFrame(outputs, schema=schemas.TEACHER_OUTPUTS)
    inputs = pl.DataFrame(inputs, schema=schemas.TEACHER_INPUTS)
    base_rss = peak_rss_mb()
    start = time.perf_counter()
    result = filter_pairs(outputs, inputs)
    seconds = time.perf_counter() - start
    dup = result["reject_reason"].is_in(["near_duplicate", "exact_duplicate"]).fill_null(False).to_list()
    planted = [p[2] >= 0 for p in pairs]
    return summarise("nexa filter+dedup", n, seconds, dup, planted, base_rss)


def run_datasketch(n: int) -> dict:
    from datasketch import MinHash, MinHashLSH

    from nexa_core.distill.dedup import _WORD, MinHashConfig

    cfg = MinHashConfig()
    pairs = corpus(n)
    base_rss = peak_rss_mb()
    start = time.perf_counter()
    lsh = MinHashLSH(num_perm=cfg.num_perm, params=(cfg.bands, cfg.rows))
    dup = []
    for i, (q, a, _) in enumerate(pairs):
        words = _WORD.findall(f"{q} {a}".lower())
        grams = {" ".join(words[j : j + cfg.shingle]).encode() for j in range(len(words) - cfg.shingle + 1)}
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        m.update_batch(list(grams))
        if lsh.query(m):
            dup.append(True)
        else:
            dup.append(False)
            lsh.insert(str(i), m)
    seconds = time.perf_counter() - start
    return summarise("datasketch MinHashLSH", n, seconds, dup, [p[2] >= 0 for p in pairs], base_rss)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summarise(name, n, seconds, dup, planted, base_rss) -> dict:
    hits = sum(d and p for d, p in zip(dup, planted))
    false = sum(d and not p for d, p in zip(dup, planted))
    return {
        "method": name,
        "pairs": n,
        "seconds": round(seconds, 3),
        "pairs_per_s": round(n / seconds),
        "recall": round(hits / max(sum(planted), 1), 4),
        "false_positives": false,
        "peak_rss_mb": round(peak_rss_mb()),
        "working_mb": round(peak_rss_mb() - base_rss),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[25000, 50000, 100000])
    parser.add_argument("--smoke", action="store_true", help="2,000 pairs: checks the benchmark runs")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, n = args.one
        print(json.dumps((run_nexa if method == "nexa" else run_datasketch)(int(n))))
        return
    if args.smoke:
        args.sizes = [2000]
    sys.path.insert(0, str(Path(__file__).parent))
    from corpus import machine_line

    print(machine_line(), flush=True)
    rows = []
    for n in args.sizes:
        for method in ("nexa", "datasketch"):
            out = subprocess.run(
                [sys.executable, __file__, "--one", method, str(n)], capture_output=True, text=True, check=True
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"{r['method']:24s} n={n:>7}  {r['seconds']:8.2f} s  {r['pairs_per_s']:>8} pairs/s  "
                f"recall={r['recall']:.4f}  false_pos={r['false_positives']}  peak_rss={r['peak_rss_mb']} MB  "
                f"(+{r['working_mb']} MB over the loaded input)",
                flush=True,
            )
        nexa, base = rows[-2], rows[-1]
        print(
            f"  ratio at n={n}: {nexa['pairs_per_s'] / base['pairs_per_s']:.2f}x pairs/s "
            f"(recall {nexa['recall']:.4f} vs {base['recall']:.4f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
