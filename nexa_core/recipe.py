"""A recipe: the typed settings of every launched stage, one class per stage. Each stage's YAML under
nexa_core/configs/ holds its defaults and says in its comments what each setting does; nexa_core/settings.py reads
them strictly (an unknown key or a wrong type is an error naming it). The Dagster config of each asset is made from
these classes (nexa_assets/settings.py), so the UI's launchpad offers the same fields with their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from nexa_core.roles import ROLES
from nexa_core.settings import KindSettled, StageSettings

BF16 = ("auto", "true", "false")  # auto: bf16 on CUDA and on CPUs with avx512_bf16 or AMX, else fp32


def choice(*options: str):
    return field(metadata={"choices": options})


# --- reading and SFT -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TrainingKind:
    """What differs by kind of student (a real base or one built from a config): unset at the top level, each
    is taken from the `pretrained` or `from_config` section (KindSettled.for_student)."""

    num_train_epochs: float | None = None
    learning_rate: float | None = None
    warmup_steps: int | None = None
    per_device_train_batch_size: int | None = None
    packing: bool | None = None


@dataclass(kw_only=True)
class ReadingKind(TrainingKind):
    sentence_passes: int | None = None
    max_length: int | None = None


@dataclass(kw_only=True)
class FinetuneKind(TrainingKind):
    replay_documents: int | None = None


@dataclass(kw_only=True)
class TrainerConfig(KindSettled):
    """What reading and SFT share: the trainer's run (TRL SFTConfig's fields of the same names)."""

    base_model: str
    max_steps: int
    lr_scheduler_type: str
    weight_decay: float
    gradient_accumulation_steps: int
    group_by_length: bool
    gradient_checkpointing: bool
    attn_implementation: str
    trainer_args: dict
    bf16: str = choice(*BF16)
    eval_steps: int
    save_steps: int
    save_total_limit: int
    logging_steps: int
    progress_seconds: float
    seed: int


@dataclass(kw_only=True)
class TinyLlama:
    hidden_size: int
    layers: int
    heads: int
    vocab_size: int


@dataclass(kw_only=True)
class ReadingConfig(TrainerConfig, ReadingKind):
    """The student reads its domain (student_base, `python -m nexa_core.train.pretrain`)."""

    stage = "student_base"
    defaults_file = "pretrain_default.yaml"
    kind_fields = ReadingKind

    continued_pretraining: bool
    restatement_passes: int
    student: TinyLlama
    pretrained: ReadingKind
    from_config: ReadingKind


@dataclass(kw_only=True)
class Lora:
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]


@dataclass(kw_only=True)
class FinetuneConfig(TrainerConfig, FinetuneKind):
    """SFT on the domain's QA pairs (student_checkpoint, `python -m nexa_core.train.trainer`)."""

    stage = "student_checkpoint"
    defaults_file = "train_default.yaml"
    kind_fields = FinetuneKind

    finetune: str = choice("full", "lora", "auto")
    lora: Lora
    qa_first_epochs: float
    restatement_passes: int
    replay_sentence_passes: int
    max_length: int
    early_stopping_patience: int
    min_train_examples: int
    merge: bool
    pretrained: FinetuneKind
    from_config: FinetuneKind


# --- logit-level distillation ----------------------------------------------------------------------


@dataclass(kw_only=True)
class TeacherLogitsConfig(StageSettings):
    """The teacher's top-k log-probabilities (teacher_logits, `python -m nexa_core.train.teacher_logits`)."""

    stage = "teacher_logits"
    defaults_file = "teacher_logits_default.yaml"

    k: int
    batch_size: int
    sentence_passes: int
    max_length: int


@dataclass(kw_only=True)
class DistillConfig(StageSettings):
    """A depth-pruned copy trained on the cached top-k (student_distilled, `python -m nexa_core.train.kd`)."""

    stage = "student_distilled"
    defaults_file = "kd_default.yaml"

    keep_ratio: float
    keep_layers: int | None
    kind: str = choice("forward", "reverse", "jsd")
    beta: float
    temperature: float
    alpha: float
    num_train_epochs: int
    learning_rate: float
    per_device_train_batch_size: int
    importance_batches: int
    seed: int
    bf16: str = choice(*BF16)
    compare_sft: bool
    progress_seconds: float


# --- evaluation and release ------------------------------------------------------------------------


@dataclass(kw_only=True)
class GenerateConfig(StageSettings):
    """Answers to the test split (eval_predictions, `python -m nexa_core.evaluate.generate`)."""

    stage = "eval_predictions"
    defaults_file = "generate_default.yaml"

    max_new_tokens: int
    min_new_tokens: int | None
    batch_size: int
    do_sample: bool
    num_beams: int
    repetition_penalty: float
    seed: int
    cache_implementation: str | None
    speed_tokens: int
    bf16: str = choice(*BF16)
    threads: int
    progress_seconds: float


@dataclass(kw_only=True)
class BenchmarkConfig(StageSettings):
    """The domain's suites under lm-evaluation-harness (benchmark_scores, `python -m nexa_core.evaluate.benchmark`)."""

    stage = "benchmark_scores"
    defaults_file = "benchmark_default.yaml"

    chat_template: bool
    system_prompt: str | None
    batch_size: int
    max_gen_toks: int
    roles: list[str] = choice(*ROLES)
    bf16: str = choice(*BF16)
    confidence: float
    n_resamples: int


@dataclass(kw_only=True)
class MergeConfig(StageSettings):
    """A release's full weights (model_release, `python -m nexa_core.release.merge`)."""

    stage = "model_release"
    defaults_file = "merge_default.yaml"

    dtype: str = choice("auto", "bfloat16", "float32")


STAGE_CONFIGS = (
    ReadingConfig,
    FinetuneConfig,
    TeacherLogitsConfig,
    DistillConfig,
    GenerateConfig,
    BenchmarkConfig,
    MergeConfig,
)
