"""Logit-level distillation pieces on a tiny Llama: depth pruning keeps the layers asked for and the pruned
model still generates; the KD loss is the full KL when k is the vocabulary, zero for the teacher itself, falls
while a pruned student trains, and is the same from cached top-k as from live logits; a vocabulary mismatch is
refused by name; the distilled release's gate. The graph test runs them as assets, through the release of the
distilled student and nexa-serve answering with it."""

import json
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from nexa_core.train.kd import (
    DistillError,
    check_vocabularies,
    distill_steps,
    kd_loss,
    layer_importance,
    layers_to_keep,
    prune_layers,
    top_k_fidelity,
    top_k_logprobs,
)

VOCAB = 96


def tiny(layers: int = 6, vocab: int = VOCAB, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def batches():
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(3):
        ids = torch.randint(3, VOCAB, (4, 12), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, 9:] = 0  # one padded row
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return out


def test_pruning_keeps_the_layers_asked_for_and_still_generates(batches):
    teacher = tiny()
    importance = layer_importance(teacher, batches)
    assert len(importance) == 6 and all(v >= 0 for v in importance)
    keep = layers_to_keep(importance, keep_ratio=0.5)
    assert len(keep) == 3 and keep == sorted(keep)
    assert set(keep) == set(sorted(range(6), key=lambda i: importance[i])[3:])  # the three most important
    student = prune_layers(teacher, keep)
    assert student.config.num_hidden_layers == 3 and len(student.model.layers) == 3
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1, 2]
    assert teacher.config.num_hidden_layers == 6  # the teacher is left as it was
    for mine, theirs in zip(student.model.layers, [teacher.model.layers[i] for i in keep]):
        assert torch.equal(mine.mlp.up_proj.weight, theirs.mlp.up_proj.weight)
    generated = student.generate(batches[0]["input_ids"][:1, :5], max_new_tokens=6, do_sample=False)
    assert generated.shape == (1, 11)
    with pytest.raises(DistillError, match="keep between 1 and 6"):
        layers_to_keep(importance, keep_layers=7)


def test_kd_loss_is_the_full_kl_with_the_whole_vocabulary_and_zero_for_the_teacher(batches):
    teacher, student = tiny(seed=0), tiny(seed=5)
    batch = batches[0]
    with torch.no_grad():
        t_logits = teacher(input_ids=batch["input_ids"]).logits
        s_logits = student(input_ids=batch["input_ids"]).logits
    values, indices = top_k_logprobs(t_logits, VOCAB)
    mask = batch["attention_mask"]
    full = F.kl_div(F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1), log_target=True, reduction="none")
    expected = full.sum(-1)[mask.bool()].mean()
    assert kd_loss(s_logits, values, indices, mask) == pytest.approx(float(expected), rel=1e-4)
    for kind in ("forward", "reverse", "jsd"):
        assert float(kd_loss(t_logits, *top_k_logprobs(t_logits, 8), mask, kind=kind)) == pytest.approx(0, abs=1e-5)
        assert float(kd_loss(s_logits, *top_k_logprobs(t_logits, 8), mask, kind=kind)) > 1e-4
    with pytest.raises(DistillError, match="kind 'kl'"):
        kd_loss(s_logits, values, indices, mask, kind="kl")


def test_cached_top_k_gives_the_live_loss_and_the_loss_falls_while_a_pruned_student_trains(batches, tmp_path):
    teacher = tiny()
    student = prune_layers(teacher, layers_to_keep(layer_importance(teacher, batches), keep_layers=2))
    with torch.no_grad():
        live = [top_k_logprobs(teacher(input_ids=b["input_ids"]).logits, 16) for b in batches]
    # through Delta and back, as the teacher_logits table keeps them: a list of k log-probs and ids per token
    frame = pl.DataFrame(
        {
            "batch": [i for i, (v, _) in enumerate(live) for _ in range(v.shape[0])],
            "logprobs": [row.tolist() for v, _ in live for row in v],
            "token_ids": [row.tolist() for _, ix in live for row in ix],
        }
    )
    frame.write_delta(str(tmp_path / "teacher_logits"))
    read = pl.read_delta(str(tmp_path / "teacher_logits"))
    cached = [
        (
            torch.tensor(read.filter(pl.col("batch") == i)["logprobs"].to_list()),
            torch.tensor(read.filter(pl.col("batch") == i)["token_ids"].to_list()),
        )
        for i in range(len(batches))
    ]
    with torch.no_grad():
        logits = student(input_ids=batches[0]["input_ids"]).logits
    mask = batches[0]["attention_mask"]
    assert float(kd_loss(logits, *cached[0], mask)) == pytest.approx(float(kd_loss(logits, *live[0], mask)), rel=1e-5)
    losses = distill_steps(student, batches, cached, steps=30, learning_rate=3e-3, log=lambda _: None)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


def test_top_k_fidelity_holds_all_the_mass_and_the_full_kl_when_k_is_the_vocabulary(batches):
    teacher, student = tiny(seed=0), tiny(layers=2, seed=5)
    rows = {r["k"]: r for r in top_k_fidelity(teacher, student, batches, [4, 16, VOCAB])}
    assert rows[4]["teacher_mass"] < rows[16]["teacher_mass"] < rows[VOCAB]["teacher_mass"] == pytest.approx(1)
    assert rows[VOCAB]["kl_top_k"] == pytest.approx(rows[VOCAB]["kl_full"], rel=1e-4)
    # coarsened to k tokens and the rest, the divergence can only shrink (the data processing inequality)
    assert rows[4]["kl_top_k"] < rows[16]["kl_top_k"] <= rows[VOCAB]["kl_full"] * (1 + 1e-5)


def test_a_distilled_student_is_apart_from_sft_alone_only_when_the_intervals_are():
    from nexa_core.evaluate.distilled import apart, distilled_verdicts
    from nexa_core.evaluate.leaderboard import distilled_markdown

    def row(role, mean, low, high, size, speed):
        scores = {"mean": mean, "ci_low": low, "ci_high": high, "n": 50}
        return {"model_role": role, "source": "test", "metric": "token_f1", **scores} | {
            "parameters": size,
            "new_tokens_per_s": speed,
        }

    summary = pl.DataFrame(
        [
            row("student", 0.30, 0.25, 0.35, 50, 300.0),
            row("pruned_sft", 0.20, 0.15, 0.24, 50, 300.0),
            row("teacher", 0.40, 0.33, 0.47, 100, 150.0),
            row("base", 0.10, 0.05, 0.15, 100, 150.0),
        ]
    )
    verdicts = distilled_verdicts(summary)
    assert verdicts["token_f1/kept_of_teacher"] == pytest.approx(0.75)
    assert verdicts["token_f1/vs_pruned_sft"] == "above" and verdicts["token_f1/vs_base"] == "above"
    assert verdicts["speedup"] == pytest.approx(2.0) and verdicts["size_ratio"] == pytest.approx(0.5)
    assert apart({"ci_low": 0.2, "ci_high": 0.3}, {"ci_low": 0.29, "ci_high": 0.4}) == "overlap"
    assert apart({"ci_low": 0.1, "ci_high": 0.2}, {"ci_low": 0.21, "ci_high": 0.4}) == "below"
    assert "| student | 0.0M | 300 | 0.300 [0.250, 0.350] |" in distilled_markdown(summary)


def test_a_student_with_another_vocabulary_is_refused_by_name():
    with pytest.raises(DistillError, match=r"student's vocabulary \(64 tokens.*teacher's \(96 tokens"):
        check_vocabularies(tiny(), tiny(layers=2, vocab=64))
    check_vocabularies(tiny(), tiny(layers=2))


def distilled_scores_frame(student: float, base: float, teacher: float, width: float = 0.05) -> pl.DataFrame:
    rows = [
        {"model_role": role, "source": "suites", "metric": "accuracy", "mean": mean, "n": 40}
        | {"ci_low": mean - width, "ci_high": mean + width}
        for role, mean in (("student", student), ("base", base), ("teacher", teacher))
    ]
    return pl.DataFrame(rows)


def test_the_distilled_gate_asks_for_a_lift_over_the_base_and_a_share_of_the_teacher():
    from nexa_core.release.distilled import DistilledGateConfig, distilled_gate

    passed = distilled_gate(DistilledGateConfig(), distilled_scores_frame(0.70, 0.30, 0.73))
    assert passed.passed and passed.metric == "benchmark_accuracy"
    assert passed.lifts["kept_of_teacher"] == pytest.approx(0.70 / 0.73)
    assert "keeps 0.959 of its teacher's" in passed.description()
    too_small = distilled_gate(DistilledGateConfig(), distilled_scores_frame(0.55, 0.30, 0.73))
    assert not too_small.passed and "under the 0.900 asked" in too_small.description()
    near_base = distilled_gate(DistilledGateConfig(), distilled_scores_frame(0.70, 0.62, 0.73))
    assert not near_base.passed and "does not beat the base" in near_base.description()
    by_means = distilled_gate(DistilledGateConfig(rule="mean"), distilled_scores_frame(0.70, 0.62, 0.73))
    assert by_means.passed


@pytest.mark.heavy  # the KD graph also runs in the default run, in bench/distill_kd.py's smoke (test_bench)
@pytest.mark.slow  # the teacher and the distiller run as launched stages
def test_the_graph_caches_the_checkpoint_s_top_k_and_distils_a_pruned_student_that_reuses_them(
    evaluated_physics, tmp_path
):
    import dagster as dg
    from release_helpers import copy_tables, graph_resources, read

    from nexa_assets import evaluate, kd, pretrain, train
    from nexa_core.models.load import load_student

    root = copy_tables(evaluated_physics["root"], tmp_path)
    instance, assets = evaluated_physics["instance"], [pretrain.student_base, train.student_checkpoint, *kd.KD_ASSETS]
    first = dg.materialize(
        assets,
        selection=kd.KD_ASSETS,
        partition_key="physics",
        instance=instance,
        resources=graph_resources(root),
        run_config={
            "ops": {
                "teacher_logits": {"config": {"k": 8}},
                "student_distilled": {"config": {"num_train_epochs": 3, "learning_rate": 1e-3}},
                "distilled_scores": {"config": {"generation": {"max_new_tokens": 8}}},
            }
        },
    )
    assert first.success
    checkpoint = read(root, "student_checkpoint").row(0, named=True)
    sft = read(root, "sft_dataset", checkpoint["sft_version"]).filter(pl.col("split") == "train")
    cached = read(root, "teacher_logits")
    assert set(cached["teacher_id"]) == {checkpoint["checkpoint_id"]}
    assert sorted(cached.filter(pl.col("source") == "sft")["example_id"]) == sorted(sft["example_id"])
    # and the corpus the teacher read, every token of a block labelled
    blocks = cached.filter(pl.col("source") == "document")
    assert blocks.height > 0 and (blocks["input_ids"] == blocks["labels"]).all()
    meta = first.asset_materializations_for_node("teacher_logits")[0].metadata
    read_by_base = read(root, "student_base")["documents_version"][0]
    assert read_by_base is not None and meta["documents_version"].value == read_by_base
    row = cached.row(0, named=True)
    assert len(row["logprobs"]) == len(row["input_ids"]) == len(row["token_ids"]) and len(row["token_ids"][0]) == 8
    assert row["logprobs"][0] == sorted(row["logprobs"][0], reverse=True) and row["logprobs"][0][0] <= 0
    distilled = read(root, "student_distilled").row(0, named=True)
    assert distilled["teacher_id"] == checkpoint["checkpoint_id"] and distilled["logits_id"] == row["logits_id"]
    assert len(json.loads(distilled["kept_layers"])) == distilled["teacher_layers"] // 2
    assert (
        distilled["parameters"] < distilled["teacher_parameters"] and distilled["final_loss"] < distilled["first_loss"]
    )
    checks = [e.asset_check_evaluation_data for e in first.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert [(c.check_name, c.passed) for c in checks] == [("loss_decreased", True)]
    # the same pruned copy trained by SFT alone, beside it
    sft_only = json.loads(Path(distilled["pruned_sft_uri"], "manifest.json").read_text())
    assert sft_only["alpha"] == 0 and sft_only["kept_layers"] == json.loads(distilled["kept_layers"])
    assert sft_only["document_blocks"] == blocks.height  # both trained on the pairs and the documents
    # scored like a checkpoint: the student, its teacher, the SFT-only copy and the base on the test split and the
    # suites, each with an interval, its size and its speed
    scores = read(root, "distilled_scores")
    assert set(scores["model_role"]) == {"student", "pruned_sft", "teacher", "base"}
    assert set(scores["distilled_id"]) == {distilled["distilled_id"]}
    assert {(r["source"], r["metric"]) for r in scores.iter_rows(named=True)} == {
        ("test", "token_f1"),
        ("test", "contains"),
        ("suites", "accuracy"),
        ("suites", "acc_norm"),
    }
    assert scores.filter(pl.col("ci_low") > pl.col("mean")).is_empty() and (scores["n"] > 0).all()
    sizes = dict(scores.select("model_role", "parameters").unique().iter_rows())
    assert sizes["student"] == sizes["pruned_sft"] == distilled["parameters"] < sizes["teacher"]
    assert (scores["new_tokens_per_s"] > 0).all()
    meta = first.asset_materializations_for_node("distilled_scores")[0].metadata
    assert meta["token_f1/vs_pruned_sft"].value in ("above", "below", "overlap") and "speedup" in meta
    # on the leaderboard beside the checkpoints, with its size and speed
    board = dg.materialize([evaluate.leaderboard], instance=instance, resources=graph_resources(root))
    smaller = board.asset_materializations_for_node("leaderboard")[0].metadata["smaller_students"].value
    assert "**physics**" in smaller and "| pruned_sft |" in smaller and "new tokens/s" in smaller
    report = Path(board.asset_materializations_for_node("leaderboard")[0].metadata["report"].value)
    assert "Smaller students" in report.read_text()
    model, tokenizer = load_student(distilled["model_uri"])
    prompt = tokenizer("Gravity", return_tensors="pt")
    assert model.generate(**prompt, max_new_tokens=4, do_sample=False).shape[1] > prompt["input_ids"].shape[1]
    # released as <model>-distilled through its gate: refused first (it cannot keep twice its teacher's score),
    # then let through, merged, registered and served; the domain's own champion line is untouched
    from release_helpers import start_nexa_serve, stop_nexa_serve

    from nexa_assets.distilled_release import distilled_release

    def release(**gate):
        return dg.materialize(
            [*assets, distilled_release],
            selection=[distilled_release],
            partition_key="physics",
            instance=instance,
            resources=graph_resources(root),
            run_config={"ops": {"distilled_release": {"config": gate}}},
            raise_on_error=False,
        )

    def gate_check(result):
        checks = [
            e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        return next(c for c in checks if c.check_name == "distilled_gate")

    refused = release(min_kept=2.0)
    assert not gate_check(refused).passed and "under the 2.000 asked" in gate_check(refused).description
    assert not (root / "delta" / "nexa" / "release_history").exists()
    passed = release(rule="mean", min_lift_over_base=-1.0, min_kept=0.0)
    assert passed.success and gate_check(passed).passed
    released = read(root, "distilled_release").row(0, named=True)
    assert (released["registered_model"], released["model_version"]) == ("nexa-physics-distilled", 1)
    assert released["checkpoint_id"] == distilled["distilled_id"] and released["finetune"] == "distilled"
    card = Path(released["merged_uri"], "README.md").read_text()
    assert "a distilled physics student" in card and distilled["teacher_id"] in card and "| pruned_sft |" in card
    tracking = graph_resources(root)["tracking"]
    assert tracking.champion_version("physics", "distilled") == 1 and tracking.champion_version("physics") is None
    server = start_nexa_serve(root, "physics", released["served_model"], "--distilled")
    try:
        first = server["first"]
        assert first.model.startswith(released["served_model"]) and first.choices[0].message.content is not None
        assert "nexa-physics-distilled v1 answers" in server["announcement"]
    finally:
        stop_nexa_serve(server)
    # a second student from the same cached logits: the teacher is not run again
    second = dg.materialize(
        assets,
        selection=[kd.student_distilled],
        partition_key="physics",
        instance=instance,
        resources=graph_resources(root),
        run_config={"ops": {"student_distilled": {"config": {"keep_layers": 1}}}},
    )
    assert second.success and read(root, "teacher_logits").height == cached.height
    again = read(root, "student_distilled").row(0, named=True)
    assert again["logits_id"] == row["logits_id"] and len(json.loads(again["kept_layers"])) == 1
