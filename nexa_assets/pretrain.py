"""student_base: the student reads its domain's documents (causal LM on all of them) before SFT, on a
GPU node (or here) through the training launcher. The asset is the Delta row that records the model
SFT starts from; weights are files under the launcher's artifact root."""

import dagster as dg
from pydantic import Field

from nexa_assets.partitions import LAUNCHED
from nexa_assets.settings import REPLAY_OF, pinned, restatements_read, settings_class, stage_settings
from nexa_core.recipe import ReadingConfig
from nexa_core.schemas import SPEED
from nexa_core.stage import ReadRequest
from nexa_core.tables import RAW_DOCUMENTS
from nexa_core.train.checkpoints import base_row
from resources.delta import DeltaStore
from resources.launcher import TrainingLauncher
from resources.student import StudentModel

GROUP = "train"

ReadSettings = settings_class(
    ReadingConfig,
    "ReadSettings",
    "The reading stage's settings (nexa_core/configs/pretrain_default.yaml).",
    base_model=(str | None, Field(default=None, description="null: the student resource's (NEXA_BASE_MODEL)")),
    documents_version=pinned("raw_documents"),
    restatements_version=pinned("restatements"),
    replay_of=REPLAY_OF,
)


@dg.asset(
    **LAUNCHED,
    group_name=GROUP,
    code_version="1",
    deps=[RAW_DOCUMENTS],
    kinds={"pytorch"},
    check_specs=[
        dg.AssetCheckSpec(
            "loss_decreased",
            asset="student_base",
            description="Reported by the reader: mean of the last 5 logged losses (fewer if fewer were logged) is "
            "below the mean of the first 5 (absent when nothing was read).",
        )
    ],
)
def student_base(
    context: dg.AssetExecutionContext,
    config: ReadSettings,
    delta: DeltaStore,
    launcher: TrainingLauncher,
    student: StudentModel,
):
    """The student after reading every document of the domain: a real base's continued pretraining (on by
    default, `continued_pretraining`) or the config-built default's pretraining; SFT starts from it."""
    domain = context.partition_key
    documents_version = delta.version(RAW_DOCUMENTS) if config.documents_version is None else config.documents_version
    if documents_version is None:
        raise dg.Failure(f"partition {domain}: raw_documents has never been materialized")
    settings = stage_settings(ReadingConfig, config, base_model=config.base_model or student.base_model)
    restatements_uri, restatements_version, digest = restatements_read(delta, settings, config.restatements_version)
    stage = f"replay-{config.replay_of}-read" if config.replay_of else "read"
    out_dir = launcher.output_dir(domain, documents_version, digest, stage=stage)
    request = ReadRequest(
        domain=domain,
        output_dir=out_dir,
        documents_uri=delta.uri(RAW_DOCUMENTS),
        documents_version=documents_version,
        restatements_uri=restatements_uri,
        restatements_version=restatements_version,
        bases_dir=launcher.bases_dir(),  # a named base is converted once per artifact root, for every domain
        overrides=settings.changes(),
    )
    record, checks = launcher.run_stage(context, request, dict(delta.storage_options or {}))
    frame = base_row(domain, record, documents_version, digest)
    row = frame.row(0, named=True)
    yield dg.Output(
        frame,
        metadata={
            "base_model": row["base_model"],
            "model_uri": row["model_uri"],
            "trained": row["trained"],
            "documents": row["documents"],
            "documents_version": documents_version,
            "read_tokens": row["read_tokens"],
            "steps": row["steps"],
            "final_loss": row["final_loss"],
            "wall_seconds": round(row["wall_seconds"], 2),
            "device": row["device"],
            "precision": row["precision"] or "",
            **{name: row[name] for name in SPEED},  # tokens/s, MFU against the GEMM roof measured here, padding
        },
    )
    yield from checks
