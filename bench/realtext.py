"""Real text, human questions: a domain's textbook paragraphs read as a user's new raw folder, and the student, the
model after reading and the off-the-shelf base asked the questions people wrote on them; and on another domain's
questions, what the student forgot.

Usage: python bench/realtext.py DOMAIN [--limit N] [--forgetting OTHER] [--paragraphs PATH] [--questions PATH]
       python bench/realtext.py --smoke

Reads SciQ's validation split by path (default ../shared/realtext/ beside the project: paragraphs.jsonl and
questions.jsonl, {id, domain, text} and {id, domain, question, answer}; CC BY-NC 3.0, so nothing of it is copied
into the project). The DOMAIN's paragraphs (the first N with --limit) become one file in a fresh raw folder, and the
whole graph (nexa_job, the main command's settings) runs on it in a temporary home. The human questions on those
paragraphs (same ids), and OTHER's (--forgetting; default the next of physics, chemistry, biology; its first N with
--limit) are then asked two ways:
- multiple choice by log-likelihood (acc and acc_norm), 4-way, distractors drawn (seeded) from the other answers of
  the question's domain, written as suite files in a temporary suite folder that benchmark_scores runs in the graph
  (the project's lm-eval runner; nexa_core.evaluate.suite_builder.multiple_choice_rows draws the distractors);
- generated answers (token F1, answer contained), decoded as eval_predictions decodes (nexa_core.evaluate.generate)
  under the student's system prompt and scored by nexa_core.evaluate.metrics;
each with a 95% bootstrap interval, the student beside the model after reading and the base. The targets of issue 29
follow: the student's multiple-choice acc interval wholly above the base's and token F1 0.40 or more on its domain,
and on OTHER's questions not below its base. --smoke: the project's own small fixture (tests/fixtures/realtext/,
not SciQ), physics with chemistry as OTHER, the config-built student, a few steps (its figures mean nothing).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from corpus import machine_line  # noqa: E402
from isolated import isolated_graph, smoke_config  # noqa: E402

SHARED = ROOT.parent / "shared" / "realtext"
FIXTURE = ROOT / "tests" / "fixtures" / "realtext"
DOMAINS = ("physics", "chemistry", "biology")
SEED = 0
MEASURES = [  # (source, metric, label)
    ("suites", "accuracy", "multiple choice acc"),
    ("suites", "acc_norm", "multiple choice acc_norm"),
    ("answers", "token_f1", "answer token F1"),
    ("answers", "contains", "answer contained"),
]
F1_TARGET = 0.40


def cpu_line() -> str:
    """The CPU by name, whether it has bf16 matrix units, and torch's threads: what CPU figures depend on."""
    from nexa_core.models.speed import cpu_text

    return f"cpu: {cpu_text()}"


def read_jsonl(path: Path, what: str) -> list[dict]:
    if not path.is_file():
        raise SystemExit(
            f"no {what} file at {path}: the real-text benchmark reads SciQ's validation split from ../shared/realtext/ "
            f"beside the project (see its README.md); pass --paragraphs and --questions, or --smoke for the project's "
            f"own small fixture"
        )
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def question_sets(args) -> tuple[list[dict], dict[str, list[dict]], dict[str, list[str]]]:
    """(the domain's paragraphs to read, {domain: its questions to ask}, {domain: every answer of the domain, the
    distractors' pool}); the domain's questions are those on the paragraphs read, OTHER's its first N."""
    paragraphs = read_jsonl(Path(args.paragraphs), "paragraphs")
    questions = read_jsonl(Path(args.questions), "questions")
    read = [p for p in paragraphs if p["domain"] == args.domain][: args.limit]
    if not read:
        raise SystemExit(f"{args.paragraphs} has no paragraph of domain {args.domain!r}")
    ids = {p["id"] for p in read}
    asked = {
        args.domain: [q for q in questions if q["id"] in ids],
        args.forgetting: [q for q in questions if q["domain"] == args.forgetting][: args.limit],
    }
    if not asked[args.forgetting]:
        raise SystemExit(f"{args.questions} has no question of domain {args.forgetting!r} (--forgetting)")
    pools = {d: [q["answer"] for q in questions if q["domain"] == d] for d in asked}
    return read, asked, pools


def write_inputs(tmp: Path, args, read: list[dict], asked: dict, pools: dict) -> tuple[Path, Path]:
    """(raw root, suite root) in the temporary home: the paragraphs as one JSON Lines file of the domain's raw
    folder, each question set as a multiple-choice suite of the domain's suite folder."""
    from nexa_core.evaluate.suite_builder import multiple_choice_rows

    raw = tmp / "raw" / args.domain
    raw.mkdir(parents=True)
    lines = (json.dumps({"text": p["text"], "title": p["id"]}) for p in read)
    (raw / f"{args.domain}_paragraphs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    suites = tmp / "suites" / args.domain
    suites.mkdir(parents=True)
    for domain, questions in asked.items():
        rows = multiple_choice_rows(
            [{"id": q["id"], "question": q["question"], "answer": q["answer"], "topic": domain} for q in questions],
            seed=SEED,
            pool=pools[domain],
        )
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (suites / f"realtext_{domain}.jsonl").write_text(text, encoding="utf-8")
    return raw.parent, suites.parent


def generated_scores(checkpoint: str, roles: list[str], asked: dict, domain: str, smoke: bool):
    """Each role's greedy answers to every question set, scored (token F1, contains) with intervals, per set
    (the `topic` of the summary)."""
    import polars as pl

    from nexa_core.distill.recitation import final_answer
    from nexa_core.distill.sft import SplitConfig
    from nexa_core.evaluate.generate import generate_answers
    from nexa_core.evaluate.metrics import aggregate, score_items
    from nexa_core.models.load import load_for_eval
    from nexa_core.recipe import GenerateConfig

    config = GenerateConfig.load(overrides={"max_new_tokens": 8} if smoke else None)
    system = {"role": "system", "content": SplitConfig.system_prompt.format(domain=domain)}  # as the student learnt
    items = [(name, q) for name, questions in asked.items() for q in questions]
    conversations = [[system, {"role": "user", "content": q["question"]}] for _, q in items]
    rows = []
    for role in roles:
        model, tokenizer = load_for_eval(checkpoint, role, config.bf16)
        answers = generate_answers(model, tokenizer, conversations, config)
        rows += [
            {"model_role": role, "topic": name, "prediction": final_answer(a["prediction"]), "reference": q["answer"]}
            for (name, q), a in zip(items, answers)
        ]
        del model
    scored = score_items(pl.DataFrame(rows))
    return aggregate(scored, ["token_f1", "contains"], by=["model_role"])


def score_table(tmp: Path, domain: str, checkpoint_id: str, answers) -> tuple[dict, list[str]]:
    """({(question set, metric, role): score row}, the roles scored, in ROLES order)."""
    import polars as pl

    from nexa_core.roles import ROLES

    history = pl.read_delta(str(tmp / "delta" / "nexa" / "benchmark_history"))
    suites = history.filter(
        (pl.col("checkpoint_id") == checkpoint_id) & (pl.col("topic") == "__all__") & (pl.col("suite") != "__all__")
    ).with_columns(topic=pl.col("suite").str.strip_prefix("realtext_"))
    table = {}
    for frame in (suites, answers.filter(pl.col("topic") != "__all__")):
        for row in frame.iter_rows(named=True):
            table[(row["topic"], row["metric"], row["model_role"])] = row
    scored = {role for _, _, role in table}
    return table, [r for r in ROLES if r in scored]


def print_scores(table: dict, roles: list[str], asked: dict, domain: str, other: str) -> None:
    from nexa_core.evaluate.leaderboard import interval_text, verdict

    width = 26
    print(f"{'questions':24s} {'measure':26s} {'n':>4s}  " + "".join(f"{r:{width}s}" for r in roles) + "vs base")
    for name in asked:
        label = f"{name} ({'read' if name == domain else 'not read'})"
        for _, metric, text in MEASURES:
            cells = {r: table.get((name, metric, r)) for r in roles}
            n = next((c["n"] for c in cells.values() if c), 0)
            scores = "".join(f"{interval_text(cells[r]):{width}s}" for r in roles)
            print(f"{label:24s} {text:26s} {n:4d}  {scores}{verdict(cells.get('student'), cells.get('base'))}")
    print("\ntargets (issue 29):")
    acc = [table.get((domain, "accuracy", r)) for r in ("student", "base")]
    f1 = table.get((domain, "token_f1", "student"))
    above = verdict(*acc) == "lift"
    print(f"  {domain} multiple-choice acc interval wholly above the base's: {'yes' if above else 'no'}")
    print(f"  {domain} answer token F1 {F1_TARGET:.2f} or more: {'yes' if f1 and f1['mean'] >= F1_TARGET else 'no'}")
    print(f"forgetting: on {other}'s questions, which it never read, the student against its base")
    for _, metric, text in MEASURES:
        student, base = table.get((other, metric, "student")), table.get((other, metric, "base"))
        if student and base:
            fell, lower = verdict(student, base) == "below", student["mean"] < base["mean"]
            said = "BELOW its base (interval wholly under)" if fell else "not below its base"
            said += " (a lower mean, intervals overlapping)" if lower and not fell else ""
            print(f"  {text:26s} student {interval_text(student)}, base {interval_text(base)}: {said}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domain", nargs="?", choices=DOMAINS, help="the domain whose paragraphs are read")
    parser.add_argument("--limit", type=int, default=None, help="read only the domain's first N paragraphs")
    parser.add_argument("--forgetting", choices=DOMAINS, help="the domain whose questions measure forgetting")
    parser.add_argument("--paragraphs", default=None, help=f"paragraphs.jsonl (default {SHARED}/paragraphs.jsonl)")
    parser.add_argument("--questions", default=None, help=f"questions.jsonl (default {SHARED}/questions.jsonl)")
    parser.add_argument("--smoke", action="store_true", help="the project's fixture, a small student, a few steps")
    args = parser.parse_args()
    source = FIXTURE if args.smoke else SHARED
    args.paragraphs = args.paragraphs or str(source / "paragraphs.jsonl")
    args.questions = args.questions or str(source / "questions.jsonl")
    if args.smoke:
        args.domain = args.domain or "physics"
    if args.domain is None:
        parser.error("name the DOMAIN whose paragraphs are read (physics, chemistry or biology), or --smoke")
    args.forgetting = args.forgetting or DOMAINS[(DOMAINS.index(args.domain) + 1) % len(DOMAINS)]
    if args.forgetting == args.domain:
        parser.error("--forgetting names another domain than DOMAIN")
    print(machine_line())
    print(cpu_line(), flush=True)
    read, asked, pools = question_sets(args)
    tmp, instance, defs = isolated_graph("nexa-realtext-", [args.domain])
    raw_root, suite_root = write_inputs(tmp, args, read, asked, pools)
    ops = {
        "raw_documents": {"config": {"raw_root": str(raw_root)}},
        "benchmark_scores": {"config": {"suite_root": str(suite_root)}},
    }
    if args.smoke:
        ops |= smoke_config(4)
    # nexa_job less the test split's evaluation and what follows from it (feedback set, leaderboard): not read here
    import dagster as dg

    from nexa_assets.definitions import nexa_job

    wanted = nexa_job.selection - dg.AssetSelection.assets("eval_predictions").downstream()
    selected = wanted.resolve(defs.resolve_asset_graph())
    ops = {name: config for name, config in ops.items() if dg.AssetKey(name) in selected}
    start = time.perf_counter()
    result = defs.resolve_job_def("nexa_job").execute_in_process(
        partition_key=args.domain,
        instance=instance,
        run_config={"ops": ops},
        asset_selection=list(selected),
        raise_on_error=False,
    )
    seconds = time.perf_counter() - start
    print(f"{args.domain} nexa_job: {'ok' if result.success else 'FAILED'} in {seconds:.0f} s", file=sys.stderr)
    if not result.success:
        return 1
    import polars as pl

    checkpoint = pl.read_delta(str(tmp / "delta" / "nexa" / "student_checkpoint")).row(0, named=True)
    sft = pl.read_delta(str(tmp / "delta" / "nexa" / "sft_dataset"))
    start = time.perf_counter()
    roles = sorted(set(pl.read_delta(str(tmp / "delta" / "nexa" / "benchmark_scores"))["model_role"]))
    answers = generated_scores(checkpoint["artifact_uri"], roles, asked, args.domain, args.smoke)
    generation = time.perf_counter() - start
    table, roles = score_table(tmp, args.domain, checkpoint["checkpoint_id"], answers)
    splits = ", ".join(f"{s} {(sft['split'] == s).sum()}" for s in ("train", "validation", "test"))
    print(
        f"\n{args.domain}: {len(read)} paragraphs read from {Path(args.paragraphs).parent} as a new raw folder; "
        f"nexa_job in {seconds:.0f} s (SFT pairs: {splits}; student {checkpoint['base_model']}, "
        f"{checkpoint['steps']} steps); generated answers in {generation:.0f} s. The human questions on those "
        f"paragraphs and {args.forgetting}'s, 4-way multiple choice (distractors: the other answers of the "
        f"question's domain, seed {SEED}) and generated answers; mean [95% bootstrap interval]"
    )
    print_scores(table, roles, asked, args.domain, args.forgetting)
    shutil.rmtree(tmp, ignore_errors=True)  # the figures are printed; a failed run's home is kept to look into
    return 0


if __name__ == "__main__":
    sys.exit(main())
