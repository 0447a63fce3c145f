"""Teacher collection throughput against a local OpenAI-compatible server with a fixed latency.

Usage: python bench/teacher.py [--requests 4000] [--latency 0.1] [--concurrency 32 128]
                               [--sequential-requests 200] [--smoke]

For each concurrency, the same requests go (1) through this project's collector (worker pool,
dispatch ledger and response cache in Delta, exactly what teacher_outputs runs), (2) through
distilabel's OpenAILLM (bench/teacher_distilabel.py says how its concurrency maps), and (3) a
plain sequential loop with the openai SDK (the first --sequential-requests of them). The bound is
concurrency / latency. Last, the finished partition is collected again: calls made (must be 0) and
seconds. The server (tests/openai_server.py --fixed-content) runs on the same machine; its CPU
share is printed. distilabel: pip install -c constraints.txt -e '.[bench]'.
"""

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MODEL = "bench-teacher"


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "openai_server.py"),
            "--port",
            "0",
            "--latency",
            str(latency),
            "--fixed-content",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline().split()[1])}"


def server(base: str, path: str = "/stats", method: str = "GET") -> dict:
    with urllib.request.urlopen(urllib.request.Request(f"{base}{path}", method=method), timeout=10) as response:
        return json.load(response)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def requests_frame(n: int):
    import polars as pl

    from nexa_core import schemas

    rows = [
        {
            "domain": "bench",
            "request_id": f"r{i}",
            "doc_id": "d",
            "passage_id": f"p{i}",
            "topic": "t",
            "source_path": "bench",
            "passage": "x",
            "template_name": "bench",
            "template_hash": "h",
            "messages": json.dumps(
                [
                    {"role": "system", "content": "You write question/answer pairs."},
                    {
                        "role": "user",
                        "content": f"Write pairs about passage {i}: the sky is blue "
                        f"because of Rayleigh scattering ({i}).",
                    },
                ]
            ),
        }
        for i in range(n)
    ]
    return pl.DataFrame(rows, schema=schemas.TEACHER_INPUTS)


def ours(base: str, frame, concurrency: int, root: Path) -> tuple[float, object]:
    from nexa_core.delta import DeltaRoot
    from nexa_core.teacher import TeacherLedger, collect_responses, parse_pairs
    from resources.teacher import TeacherResource

    teacher = TeacherResource(
        backend="openai",
        base_url=f"{base}/v1",
        model=MODEL,
        api_key="bench-key",
        max_concurrency=concurrency,
        prices={MODEL: {"input": 0.15, "output": 0.6}},
    )
    start = time.perf_counter()
    _, stats = collect_responses(
        frame,
        teacher.client(),
        TeacherLedger(DeltaRoot(str(root)), "bench"),
        params=teacher.params(),
        pricing=teacher.pricing(),
        policy=teacher.policy(),
        validate=parse_pairs,
        log=lambda message: None,
    )
    return time.perf_counter() - start, stats


def sequential(base: str, conversations: list) -> float:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="bench-key", max_retries=0)
    start = time.perf_counter()
    for messages in conversations:
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=800, temperature=0.0)
    seconds = time.perf_counter() - start
    client.close()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 128, 512, 1024])
    parser.add_argument("--sequential-requests", type=int, default=200)
    parser.add_argument(
        "--smoke", action="store_true", help="200 requests at concurrency 16: checks the benchmark runs"
    )
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.concurrency, args.sequential_requests = 200, [16], 20
    from corpus import machine_line

    print(machine_line(), flush=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import distilabel  # noqa: F401
        from teacher_distilabel import distilabel_run
    except ImportError:
        distilabel_run = None
        print("distilabel is not installed (pip install -c constraints.txt -e '.[bench]'): its column is skipped")

    frame = requests_frame(args.requests)
    conversations = [json.loads(m) for m in frame["messages"]]
    proc, base = start_server(args.latency)
    results = []
    try:
        print(
            f"{args.requests} requests, server latency {args.latency * 1000:.0f} ms, {os.cpu_count()} cores; "
            f"server: tests/openai_server.py --fixed-content on the same machine"
        )
        for concurrency in args.concurrency:
            bound = concurrency / args.latency
            with tempfile.TemporaryDirectory() as tmp:
                server(base, "/reset", "POST")
                cpu0, own0, t0 = cpu_seconds(proc.pid), own_cpu_seconds(), time.perf_counter()
                seconds, stats = ours(base, frame, concurrency, Path(tmp))
                wall = time.perf_counter() - t0
                server_cpu, collector_cpu = (cpu_seconds(proc.pid) - cpu0) / wall, (own_cpu_seconds() - own0) / wall
                paid = server(base)["paid"]
                assert stats.new_calls == paid == args.requests, (stats, paid)
                rerun_seconds, rerun = ours(base, frame, concurrency, Path(tmp))
                rerun_calls = server(base)["attempts"] - stats.attempts
            row = {
                "concurrency": concurrency,
                "bound_rps": bound,
                "ours_rps": args.requests / seconds,
                "server_cpu_share": server_cpu,
                "collector_cpu_share": collector_cpu,
                "rerun_calls": rerun_calls,
                "rerun_seconds": rerun_seconds,
                "rerun_cache_hits": rerun.cache_hits,
            }
            if distilabel_run:
                server(base, "/reset", "POST")
                run = distilabel_run(f"{base}/v1", MODEL, conversations, concurrency, max_tokens=800)
                assert run["ok"] == args.requests == server(base)["paid"], run
                row["distilabel_rps"] = args.requests / run["seconds"]
            results.append(row)
        server(base, "/reset", "POST")
        n_seq = min(args.sequential_requests, args.requests)
        sequential_rps = n_seq / sequential(base, conversations[:n_seq])
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)

    print(f"\nplain sequential loop (openai SDK, {n_seq} requests): {sequential_rps:.1f} req/s")
    print(
        f"\n{'conc':>5} {'bound':>7} {'ours':>7} {'% bound':>8} {'distilabel':>10} {'x distilabel':>12} "
        f"{'x sequential':>12} {'our cpu':>8} {'server cpu':>10} {'re-run':>18}"
    )
    for r in results:
        dl = r.get("distilabel_rps")
        print(
            f"{r['concurrency']:>5} {r['bound_rps']:>7.0f} {r['ours_rps']:>7.0f} "
            f"{r['ours_rps'] / r['bound_rps']:>8.0%} "
            f"{dl or float('nan'):>10.0f} {r['ours_rps'] / dl if dl else float('nan'):>12.2f} "
            f"{r['ours_rps'] / sequential_rps:>12.1f} {r['collector_cpu_share']:>8.0%} {r['server_cpu_share']:>10.0%} "
            f"{r['rerun_calls']:>3} calls {r['rerun_seconds']:>6.2f} s"
        )
    best = max(results, key=lambda r: r["ours_rps"])
    print(
        f"\nhighest sustained: {best['ours_rps']:.0f} req/s at concurrency {best['concurrency']} on "
        f"{os.cpu_count()} cores, the collector using {best['collector_cpu_share']:.0%} of a core and the server "
        f"{best['server_cpu_share']:.0%} (100% = one core)"
    )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.smoke:
        return 0
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "teacher.json").write_text(
        json.dumps({"args": vars(args), "sequential_rps": sequential_rps, "results": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
