"""Every Delta table of the graph, spelt once. Asset tables carry their asset's name and are written by
the IO manager; side tables are written beside an asset in the same step (histories that keep every
row ever made, the quarantine), each declared to the asset graph by the registry below so the
lineage shows who writes and who reads them."""

from dataclasses import dataclass

from nexa_core import schemas

# Asset tables: one per partitioned asset, named as the asset.
RAW_DOCUMENTS = "raw_documents"
TEACHER_INPUTS = "teacher_inputs"
TEACHER_OUTPUTS = "teacher_outputs"
FILTERED_PAIRS = "filtered_pairs"
SFT_DATASET = "sft_dataset"
RESTATEMENTS = "restatements"  # the corpus passages said again several ways, for the student to read
STUDENT_BASE = "student_base"
STUDENT_CHECKPOINT = "student_checkpoint"
EVAL_PREDICTIONS = "eval_predictions"
EVAL_METRICS = "eval_metrics"
BENCHMARK_SCORES = "benchmark_scores"
FEEDBACK_SET = "feedback_set"
LEADERBOARD = "leaderboard"  # every domain's, unpartitioned
TEACHER_LOGITS = "teacher_logits"
STUDENT_DISTILLED = "student_distilled"
DISTILLED_SCORES = "distilled_scores"
MODEL_RELEASE = "model_release"
DISTILLED_RELEASE = "distilled_release"
DEPLOYMENT = "deployment"
SWEEP_RESULTS = "sweep_results"  # one row per point of every sweep of a domain

# The teacher's ledger (nexa_core.teacher.ledger): paid answers by request, so nothing is paid for twice.
TEACHER_CACHE = "teacher_cache"
TEACHER_DISPATCH = "teacher_dispatch"
TEACHER_BATCHES = "teacher_batches"

# Side tables.
RAW_QUARANTINE = "raw_quarantine"
CHECKPOINT_HISTORY = "checkpoint_history"
EVAL_HISTORY = "eval_history"
BENCHMARK_HISTORY = "benchmark_history"
RELEASE_HISTORY = "release_history"


@dataclass(frozen=True)
class SideTable:
    name: str
    written_by: str  # the asset (or assets) whose step writes it
    schema: dict | None
    description: str


SIDE_TABLES = {
    t.name: t
    for t in (
        SideTable(
            RAW_QUARANTINE,
            RAW_DOCUMENTS,
            schemas.RAW_QUARANTINE,
            "Files and rows of data/raw/<domain> that could not become documents, with the reason.",
        ),
        SideTable(
            CHECKPOINT_HISTORY,
            STUDENT_CHECKPOINT,
            schemas.STUDENT_CHECKPOINT,
            "Every checkpoint ever trained (student_checkpoint holds the latest): what the gate promotes from.",
        ),
        SideTable(
            EVAL_HISTORY,
            EVAL_METRICS,
            schemas.EVAL_HISTORY,
            "Every evaluation's per-metric, per-topic means with 95% intervals, for every model role: "
            "the leaderboard's, the gate's and the feedback loop's source.",
        ),
        SideTable(
            BENCHMARK_HISTORY,
            BENCHMARK_SCORES,
            schemas.BENCHMARK_HISTORY,
            "Every benchmark-suite run's accuracy per suite and topic with 95% intervals, for every model role.",
        ),
        SideTable(
            RELEASE_HISTORY,
            f"{MODEL_RELEASE} and {DISTILLED_RELEASE}",
            schemas.MODEL_RELEASE,
            "Every promoted release of a domain's registered models (its own and its -distilled line), with the "
            "gate's evidence and the registered version.",
        ),
    )
}


# The tables of one round in the graph's order (what nexa-run prints).
ROUND_TABLES = (
    RAW_DOCUMENTS,
    RAW_QUARANTINE,
    TEACHER_INPUTS,
    TEACHER_OUTPUTS,
    FILTERED_PAIRS,
    SFT_DATASET,
    RESTATEMENTS,
    TEACHER_CACHE,
    STUDENT_BASE,
    STUDENT_CHECKPOINT,
    EVAL_PREDICTIONS,
    EVAL_METRICS,
    EVAL_HISTORY,
    BENCHMARK_SCORES,
    FEEDBACK_SET,
    LEADERBOARD,
)
