"""What a student of a given size learns: reading -> SFT -> test split, student against its base, one domain.

Usage: python bench/learning.py [--domain physics] [--read KEY=YAML ...] [--train KEY=YAML ...]
                                [--examples FILE] [--smoke]
       python bench/learning.py --read student.hidden_size=512 student.layers=8 student.heads=8 \
           num_train_epochs=30 --train num_train_epochs=8        # a bigger default student, on a GPU

The same functions the student_base, student_checkpoint and eval_predictions stages run (nexa_core.train.pretrain
.read_corpus, nexa_core.train.trainer.train, nexa_core.evaluate.generate), outside Dagster, on the domain's data from
bench/corpus.py, with nexa_core/configs/{pretrain,train}_default.yaml plus the overrides given. The base is the
off-the-shelf model it started from (for the config-built student: after reading, before SFT). Prints each
stage's time and the test split's token F1 and exact match for both, mean [95% bootstrap interval]
(nexa_core.evaluate.metrics). Then, on the test split's complete-the-statement
items, whether each model holds the fact it read: the first word it writes continuing the quoted prefix as
plain text (as it read it) and answering the question in the chat prompt, against the reference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from corpus import load as load_corpus
from corpus import machine_line


def first_word(text: str) -> str:
    words = text.split()
    return words[0] if words else ""


def recall(model, tokenizer, prefixes: list[str]) -> list[str]:
    """Each prefix continued greedily as plain text, the way document_rows had the student read it."""
    import torch

    head = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    out = []
    for prefix in prefixes:
        ids = torch.tensor([head + tokenizer(prefix, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            new = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(new[0, ids.shape[1] :], skip_special_tokens=True))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="physics")
    parser.add_argument("--read", nargs="*", default=[], metavar="KEY=YAML", help="pretrain_default.yaml overrides")
    parser.add_argument("--train", nargs="*", default=[], metavar="KEY=YAML", help="train_default.yaml overrides")
    parser.add_argument("--examples", help="the domain's data as JSON (bench/corpus.py): read if present, else written")
    parser.add_argument("--smoke", action="store_true", help="4 reading and 4 training steps, 8 test questions")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    import polars as pl
    import torch

    from nexa_core.distill.recitation import final_answer
    from nexa_core.evaluate.generate import generate_answers, last_turn, reference_answer
    from nexa_core.evaluate.metrics import aggregate, score_items
    from nexa_core.models.load import load_for_eval
    from nexa_core.recipe import FinetuneConfig, GenerateConfig, ReadingConfig
    from nexa_core.stage import parse_sets
    from nexa_core.teacher.question_forms import completion_prefix
    from nexa_core.train.pretrain import read_corpus
    from nexa_core.train.trainer import train

    data = load_corpus(args.domain, args.examples)
    smoke = {"max_steps": 4} if args.smoke else {}
    tiny = {"base_model": "nexa-tiny-llama"} if args.smoke else {}  # the smoke run checks the code, not the model
    splits = {
        name: pl.DataFrame({"messages": [r["messages"] for r in rows], "topic": [r["topic"] for r in rows]})
        for name, rows in data["splits"].items()
    }
    test = splits["test"].head(8) if args.smoke else splits["test"]
    work = Path(tempfile.mkdtemp(prefix="nexa-bench-learning-"))
    quiet = lambda message: None  # noqa: E731
    times = {}

    start = time.perf_counter()
    read = read_corpus(
        ReadingConfig.load(overrides=tiny | parse_sets(args.read) | smoke),
        data["documents"],
        work / "read",
        args.domain,
        ROOT / "data" / "artifacts" / "bases",  # a named base is converted once, as the graph does
        log=quiet,
    )
    times["read"] = time.perf_counter() - start
    start = time.perf_counter()
    trained = train(
        FinetuneConfig.load(overrides=parse_sets(args.train) | smoke | {"base_model": read["model_path"]}),
        splits,
        work / "sft",
        args.domain,
        log=quiet,
        documents=data["documents"],
    )
    times["sft"] = time.perf_counter() - start
    checkpoint = work / "sft" / ("model" if trained["finetune"] == "full" else "adapter")

    start = time.perf_counter()
    frames = []
    prefixes = [completion_prefix(last_turn(m, "user") or "") for m in test["messages"].to_list()]
    completions = [i for i, prefix in enumerate(prefixes) if prefix]
    held = {}  # role -> (continued as text, answered in chat) first words, on the completion items
    for role in ("student", "base"):
        model, tokenizer = load_for_eval(checkpoint, role)
        answers = generate_answers(model, tokenizer, test["messages"].to_list(), GenerateConfig.defaults())
        frames.append(
            test.with_columns(
                model_role=pl.lit(role),
                prediction=pl.Series([final_answer(a["prediction"]) for a in answers]),
                reference=pl.Series([reference_answer(m) for m in test["messages"].to_list()]),
            )
        )
        continued = recall(model, tokenizer, [prefixes[i] for i in completions])
        held[role] = (continued, [final_answer(answers[i]["prediction"]) for i in completions])
        del model
    times["answer"] = time.perf_counter() - start
    scores = aggregate(score_items(pl.concat(frames).drop("messages")), ["token_f1", "exact_match"], ["model_role"])
    overall = scores.filter(pl.col("topic") == "__all__")
    params = sum(p.numel() for p in load_for_eval(checkpoint, "student")[0].parameters())
    loss = lambda record: "-" if record["final_loss"] is None else f"{record['final_loss']:.3f}"  # noqa: E731
    print(
        f"{args.domain}: {params / 1e6:.1f}M parameters, {trained['finetune']} fine-tune, "
        f"device {trained['device']}, bf16 {trained['bf16']}; read {read['steps']} steps (final loss "
        f"{loss(read)}) in {times['read']:.0f} s, SFT {trained['steps']} steps (final loss "
        f"{loss(trained)}) in {times['sft']:.0f} s, answering {test.height} test questions twice in "
        f"{times['answer']:.0f} s; cuda={torch.cuda.is_available()}"
    )
    print(f"{'metric':12s} {'n':>3s} {'base':>24s} {'student':>24s}")
    for (metric,), rows in overall.group_by(["metric"], maintain_order=True):
        cell = {
            r["model_role"]: f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
            for r in rows.iter_rows(named=True)
        }
        print(f"{metric:12s} {rows['n'][0]:>3d} {cell['base']:>24s} {cell['student']:>24s}")
    references = [first_word(frames[0]["reference"][i]) for i in completions]

    def right(said: list[str]) -> int:  # first words equal after SQuAD normalisation (case, punctuation)
        words = pl.DataFrame(
            {"prediction": [first_word(s) for s in said], "reference": references},
            schema={"prediction": pl.String, "reference": pl.String},
        )
        return int(score_items(words)["exact_match"].sum())

    print(f"the fact read, on {len(completions)} complete-the-statement test items (first word right):")
    for role, (continued, answered) in held.items():
        print(
            f"  {role:8s} continuing the prefix as text {right(continued):>3d}   "
            f"answering in the chat prompt {right(answered):>3d}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
