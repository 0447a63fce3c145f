"""Column schemas of every table the graph writes. Stages build frames with these so an empty
partition still has the right columns, and checks compare against them. The score columns of the item
tables are the metrics the registry declares for their source (nexa_core.metric_registry)."""

import polars as pl

from nexa_core import metric_registry

RAW_DOCUMENTS = {
    "domain": pl.String,
    "doc_id": pl.String,
    "topic": pl.String,
    "title": pl.String,
    "text": pl.String,
    "source_path": pl.String,
    "source_row": pl.Int64,
    "n_chars": pl.Int64,
}

RAW_QUARANTINE = {
    "domain": pl.String,
    "source_path": pl.String,
    "source_row": pl.Int64,
    "reason": pl.String,
    "detail": pl.String,
    "content": pl.String,
}

TEACHER_INPUTS = {
    "domain": pl.String,
    "request_id": pl.String,
    "doc_id": pl.String,
    "passage_id": pl.String,
    "topic": pl.String,
    "source_path": pl.String,
    "passage": pl.String,
    "template_name": pl.String,
    "template_hash": pl.String,
    "messages": pl.String,  # JSON list of {"role", "content"}
    "feedback_round": pl.Int64,  # null for requests from the corpus; k for those a round-k feedback set added
    # What the prompt asks, as data (teacher.types.PairBrief): the pair budget, and for a feedback
    # request the questions the student already has (null for a corpus request)
    "max_pairs": pl.Int64,
    "known_questions": pl.List(pl.String),
}

# What a teacher call returned: shared by the per-partition outputs and the response cache.
RESPONSE = {
    "model": pl.String,
    "backend": pl.String,
    "response": pl.String,
    "finish_reason": pl.String,
    "unusable_reason": pl.String,  # null when usable; else length, content_filter, empty, malformed_json, rejected
    "attempts": pl.Int64,  # calls it took, retries included
    "via": pl.String,  # sync, batch or recovered
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "latency_s": pl.Float64,
    "cost_usd": pl.Float64,
}

TEACHER_OUTPUTS = {
    "domain": pl.String,
    "request_id": pl.String,
    "request_hash": pl.String,
    **RESPONSE,
    "from_cache": pl.Boolean,
}

TEACHER_CACHE = {
    "request_hash": pl.String,
    **RESPONSE,
    "created_at": pl.Datetime("us", "UTC"),
}

# Requests as they are handed to the endpoint, committed before they are sent: on resume, a sent
# request without a cached response is "in doubt" (it may have been paid) and is recovered first.
TEACHER_DISPATCH = {
    "domain": pl.String,
    "request_hash": pl.String,
    "chunk_id": pl.String,  # sent with the request as metadata, to find it again
    "dispatched_at": pl.Datetime("us", "UTC"),
}

# Batch API submissions, one row per state change; the latest row per batch_id is its state.
TEACHER_BATCHES = {
    "domain": pl.String,
    "batch_id": pl.String,
    "batch_key": pl.String,  # hash of model, params and request hashes; also the batch's metadata
    "request_hashes": pl.List(pl.String),
    "status": pl.String,
    "merged": pl.Boolean,  # results are in teacher_cache
    "recorded_at": pl.Datetime("us", "UTC"),
}

FILTERED_PAIRS = {
    "domain": pl.String,
    "pair_id": pl.String,
    "request_id": pl.String,
    "doc_id": pl.String,
    "passage_id": pl.String,
    "topic": pl.String,
    "source_path": pl.String,
    "kind": pl.String,
    "question": pl.String,
    "answer": pl.String,
    "passage": pl.String,
    "pii_scrubbed": pl.Boolean,
    "reject_reason": pl.String,  # null when the pair is kept
    "reject_detail": pl.String,
    "feedback_round": pl.Int64,
}

# A restatement request: a teacher input that asks for `restatements` of its passage and no pairs
# (nexa_core/distill/restatements.py; teacher.types.PairBrief).
RESTATEMENT_REQUESTS = {**TEACHER_INPUTS, "restatements": pl.Int64}

# One row per restatement of a corpus passage, kept or carrying why not (nexa_core/distill/restatements.py).
RESTATEMENTS = {
    "domain": pl.String,
    "restatement_id": pl.String,
    "passage_id": pl.String,
    "doc_id": pl.String,
    "topic": pl.String,
    "source_path": pl.String,
    "request_id": pl.String,  # the teacher request; its response is in teacher_cache by request hash
    "restatement_index": pl.Int64,  # its place in the teacher's reply; null for a reply that holds none
    "kind": pl.String,  # paraphrase, permuted, qa_form, statement_form, inverse, cloze (as the teacher named it)
    "text": pl.String,
    "template_name": pl.String,  # the prompt and its version, e.g. restatements_v1
    "template_hash": pl.String,
    "teacher_model": pl.String,
    "teacher_backend": pl.String,
    "reject_reason": pl.String,  # null when the restatement is kept
    "reject_detail": pl.String,
}

SFT_DATASET = {
    "domain": pl.String,
    "example_id": pl.String,
    "pair_id": pl.String,
    "doc_id": pl.String,
    "topic": pl.String,
    "split": pl.String,
    "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "round": pl.Int64,  # 0 from the corpus alone; k + 1 once a round-k feedback set is mixed in
    "feedback_round": pl.Int64,  # null for corpus examples
}
SFT_SPLITS = ("train", "validation", "test")  # the values of SFT_DATASET's split
MESSAGE_ROLES = ("system", "user", "assistant")  # the roles of its messages


def metric_columns(source: str) -> dict:
    """One column per metric the source scores, in the registry's order."""
    return {name: pl.Float64 for name in metric_registry.names(source)}


def empty(schema: dict) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict) -> pl.DataFrame:
    """Select and cast to the schema's columns, in order; a missing column is a bug, so it raises."""
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


# How fast a training stage ran (nexa_core/models/speed.py): null where it did not train here
SPEED = {
    "tokens_per_second": pl.Float64,  # real tokens trained (no padding) over the training time
    "mfu": pl.Float64,  # model FLOP/s over gemm_tflops: the share of this machine's matmul rate the stage reached
    "gemm_tflops": pl.Float64,  # the roof: bf16 or fp32 GEMM rate measured here at the model's MLP shape and step
    "padding_share": pl.Float64,  # pad tokens over all tokens fed
}

STUDENT_BASE = {
    "domain": pl.String,
    "base_id": pl.String,
    "base_model": pl.String,  # as configured: nexa-tiny-llama, a folder or a hub id
    "model_uri": pl.String,  # what SFT starts from: the folder the student read into, or the base as it is
    "files_sha256": pl.String,  # JSON {relative path: sha256}; {} when the base was not trained here
    "built_from_config": pl.Boolean,
    "trained": pl.Boolean,
    "documents": pl.Int64,
    "documents_version": pl.Int64,  # raw_documents' Delta version that was read
    "read_tokens": pl.Int64,
    "steps": pl.Int64,
    "final_loss": pl.Float64,
    "wall_seconds": pl.Float64,
    "gpu_seconds": pl.Float64,
    "device": pl.String,
    "precision": pl.String,  # bf16-autocast or fp32: how it computed while reading (null: not read here)
    **SPEED,
    "config_hash": pl.String,
    "settings": pl.String,  # JSON: the typed reading settings as given (nexa_core/recipe.py ReadingConfig)
    "restatements_version": pl.Int64,  # the restatements table's version it read (null: none read)
    "created_at": pl.Datetime("us", "UTC"),
}

STUDENT_CHECKPOINT = {
    "domain": pl.String,
    "checkpoint_id": pl.String,
    "artifact_uri": pl.String,
    "files_sha256": pl.String,  # JSON {relative path: sha256}
    "base_model": pl.String,
    "base_id": pl.String,  # the student_base row SFT started from
    "finetune": pl.String,  # full or lora
    "lora": pl.String,  # JSON; null for a full fine-tune
    "config_hash": pl.String,
    "settings": pl.String,  # JSON: the typed SFT settings as given (nexa_core/recipe.py FinetuneConfig)
    "restatements_version": pl.Int64,  # the restatements table's version it read (null: none read)
    "sft_version": pl.Int64,
    "round": pl.Int64,
    "train_examples": pl.Int64,
    "steps": pl.Int64,
    "resumed_from": pl.String,
    "final_loss": pl.Float64,
    "best_loss": pl.Float64,
    "best_eval_loss": pl.Float64,
    "wall_seconds": pl.Float64,
    "gpu_seconds": pl.Float64,
    "gpu_cost_usd": pl.Float64,
    "device": pl.String,
    "precision": pl.String,  # bf16-autocast or fp32: how it computed while training
    "trained_tokens": pl.Int64,  # tokens of every row of every epoch (pairs and replayed documents)
    **SPEED,
    "mlflow_run_id": pl.String,
    "dagster_run_id": pl.String,  # the run that trained it (a sweep point's run, say)
    "created_at": pl.Datetime("us", "UTC"),
}

# --- evaluation and feedback --------------------------------------------------------------------

EVAL_PREDICTIONS = {
    "domain": pl.String,
    "round": pl.Int64,
    "checkpoint_id": pl.String,
    "sft_version": pl.Int64,  # the SFT set the checkpoint was trained on (its test split is evaluated)
    "model_role": pl.String,  # student (the checkpoint) or base (its untrained base model)
    "example_id": pl.String,
    "topic": pl.String,
    "question": pl.String,
    "reference": pl.String,
    "prediction": pl.String,  # the final answer: what is scored (nexa_core.distill.recitation)
    "recitation": pl.String,  # what the model recited before its answer; null when it gave the answer alone
    "prompt_tokens": pl.Int64,
    "new_tokens": pl.Int64,
    "generation_config": pl.String,  # JSON
}

EVAL_SCORES = {
    "domain": pl.String,
    "round": pl.Int64,
    "checkpoint_id": pl.String,
    "sft_version": pl.Int64,
    "model_role": pl.String,
    "example_id": pl.String,
    "topic": pl.String,
    "question": pl.String,
    "reference": pl.String,
    "prediction": pl.String,
    **metric_columns(metric_registry.TEST),  # judge_score: null unless judge_status is "ok"
    "judge_status": pl.String,  # ok, unparseable, not_configured
    "judge_prompt": pl.String,  # the rendered rubric messages (JSON) the judge was sent
    "judge_raw": pl.String,  # the judge's answer as given
    "judge_reason": pl.String,
    "judge_model": pl.String,
    "rubric": pl.String,  # name, e.g. qa_correctness_v1
    "rubric_sha256": pl.String,
    "judge_request_hash": pl.String,  # the judge call in teacher_cache
}

# One row per (checkpoint, model role, topic, metric) every time eval_metrics runs; topic "__all__"
# is the whole domain. The leaderboard and the feedback loop read this history.
# An aggregate score: its mean, 95% bootstrap interval and sample size (eval and benchmark history).
MEAN_WITH_INTERVAL = {"mean": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Int64}

EVAL_HISTORY = {
    "domain": pl.String,
    "round": pl.Int64,
    "checkpoint_id": pl.String,
    "sft_version": pl.Int64,
    "model_role": pl.String,
    "topic": pl.String,
    "metric": pl.String,
    **MEAN_WITH_INTERVAL,
    "created_at": pl.Datetime("us", "UTC"),
}

# What a feedback set adds to the teacher inputs it is made of: why each request is there.
FEEDBACK_SET = {
    **TEACHER_INPUTS,
    "round": pl.Int64,  # the evaluated round this row was made from
    "reason": pl.String,
    "metric": pl.String,
    "topic_score": pl.Float64,
    "failed_example_ids": pl.List(pl.String),  # test items of the topic the student failed
}

# --- benchmark suites (data/eval/<domain>/, run with lm-evaluation-harness) -----------------------

# One row per (model role, suite item), as the benchmark runner writes it (nexa_core.evaluate.benchmark).
BENCHMARK_ITEMS = {
    "model_role": pl.String,  # student (the checkpoint), read, base (the model it was trained from)
    "suite": pl.String,  # the suite file's stem
    "source": pl.String,  # the suite file's name in the domain's folder
    "row": pl.Int64,  # 1-based line of a .jsonl suite; document position + 1 for a .yaml task
    "item_id": pl.String,
    "kind": pl.String,  # multiple_choice or generative
    "topic": pl.String,
    "question": pl.String,
    "choices": pl.List(pl.String),  # multiple choice, in the suite's order
    "reference": pl.String,  # the correct choice's text, or the reference answer
    "prediction": pl.String,  # the most likely choice, or the generated answer
    "n_choices": pl.Int64,
    "choice_logprobs": pl.List(pl.Float64),  # summed log-probability of each choice, in order
    # multiple-choice metrics are null on generative items and the others null on multiple-choice ones
    **metric_columns(metric_registry.SUITES),
    "lm_eval_task": pl.String,
}

# The latest benchmark run of a domain's checkpoint: its items, with the checkpoint and the settings.
BENCHMARK_SCORES = {
    "domain": pl.String,
    "round": pl.Int64,
    "checkpoint_id": pl.String,
    **BENCHMARK_ITEMS,
    "benchmark_config": pl.String,  # JSON: settings, chat template applied, lm-eval version
}

# One row per (checkpoint, role, suite, topic, metric) every time benchmark_scores runs; suite and
# topic "__all__" roll up over every suite and topic. The leaderboard reads this history.
BENCHMARK_HISTORY = {
    "domain": pl.String,
    "round": pl.Int64,
    "checkpoint_id": pl.String,
    "model_role": pl.String,
    "suite": pl.String,
    "topic": pl.String,
    "metric": pl.String,
    **MEAN_WITH_INTERVAL,
    "chance": pl.Float64,  # expected accuracy of a uniform guess (multiple choice); null otherwise
    "created_at": pl.Datetime("us", "UTC"),
}

# --- knowledge distillation ----------------------------------------------------------------------

# A distilled student beside its teacher, its SFT-only copy and the base (nexa_core.evaluate.distilled): one row
# per (role, source, metric) of the lift-table metrics, over every topic and suite.
DISTILLED_SCORES = {
    "model_role": pl.String,
    "source": pl.String,  # test (the SFT set's test split) or suites (data/eval/<domain>/, every suite)
    "metric": pl.String,
    **MEAN_WITH_INTERVAL,
    "parameters": pl.Int64,
    "new_tokens_per_s": pl.Float64,  # greedy answers to the test split, same batches for every role
}

# --- release and serving --------------------------------------------------------------------------

# A checkpoint promoted by the gate: model_release holds each domain's champion, release_history every
# promotion. The Delta versions it was made from are in `lineage`; the SFT rows it was trained on are
# sft_dataset at sft_version (nexa-release-rows).
MODEL_RELEASE = {
    "domain": pl.String,
    "release_id": pl.String,
    "registered_model": pl.String,  # MLflow Model Registry name, one per domain
    "model_version": pl.Int64,  # its registry version; the alias `champion` points at it
    "served_model": pl.String,  # the model name nexa-serve answers to: <registered_model>-v<version>
    "checkpoint_id": pl.String,
    "round": pl.Int64,
    "sft_version": pl.Int64,
    "base_id": pl.String,
    "base_model": pl.String,
    "finetune": pl.String,
    "merged_uri": pl.String,  # full weights (adapter merged), tokenizer, chat template, model card
    "files_sha256": pl.String,  # JSON {relative path: sha256}
    "metric": pl.String,  # what the gate compared
    "score": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "base_score": pl.Float64,
    "previous_champion": pl.Int64,  # registry version it replaced; null for the first
    "gate": pl.String,  # JSON: rule, thresholds, numbers, reasons
    "lineage": pl.String,  # JSON: every (table, Delta version) read on the way
    "teacher_usd": pl.Float64,
    "gpu_hours": pl.Float64,
    "code_version": pl.String,
    "model_card": pl.String,  # markdown
    "mlflow_run_id": pl.String,
    "released_at": pl.Datetime("us", "UTC"),
}

# One row each time nexa-serve starts serving a release (a champion, or a distilled release with --distilled).
DEPLOYMENT = {
    "domain": pl.String,
    "deployment_id": pl.String,
    "endpoint_url": pl.String,  # OpenAI-compatible base URL (.../v1)
    "release_asset": pl.String,  # the release it serves: model_release (SFT champion) or distilled_release
    "served_model": pl.String,
    "registered_model": pl.String,
    "model_version": pl.Int64,
    "release_id": pl.String,
    "merged_uri": pl.String,
    "server": pl.String,  # the serving command
    "device": pl.String,
    "pid": pl.Int64,
    "ready_seconds": pl.Float64,  # from launch to the first healthy answer of the server
    "started_at": pl.Datetime("us", "UTC"),
}


# --- sweeps ---------------------------------------------------------------------------------------

# One row per point of a sweep (nexa_core/sweep.py): its settings, its checkpoint and the lift-table measures of
# the student beside the off-the-shelf base.
SWEEP_SCORE = pl.Struct(
    {
        "measure": pl.String,
        "n": pl.Int64,
        "mean": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "base_mean": pl.Float64,
        "base_ci_low": pl.Float64,
        "base_ci_high": pl.Float64,
    }
)
SWEEP_RESULTS = {
    "domain": pl.String,
    "sweep_id": pl.String,
    "point": pl.Int64,
    "settings": pl.String,  # JSON {ASSET.KEY: value}: what the point sets
    "is_default": pl.Boolean,  # every setting of the point is its stage's default
    "dagster_run_id": pl.String,  # the point's successful run (null: none)
    "checkpoint_id": pl.String,
    "artifact_uri": pl.String,
    "train_seconds": pl.Float64,
    "trained_tokens": pl.Int64,
    "tokens_per_second": pl.Float64,
    "scores": pl.List(SWEEP_SCORE),
    "created_at": pl.Datetime("us", "UTC"),
}
