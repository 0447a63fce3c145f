"""The launched stages' requests: the argv an asset's request makes is parsed back by the stage into the same
request, so the asset and the stage cannot drift apart; a bad value is refused on the command line."""

import pytest

from nexa_core.stage import (
    BenchmarkRequest,
    DistillRequest,
    GenerateRequest,
    MergeRequest,
    ReadRequest,
    SFTRequest,
    TeacherLogitsRequest,
)

REQUESTS = [
    ReadRequest(domain="physics", output_dir="/a/read", documents_uri="/d/raw_documents", documents_version=3),
    SFTRequest(
        domain="physics",
        output_dir="/a/sft",
        sft_uri="/d/sft_dataset",
        sft_version=7,
        documents_uri="/d/raw_documents",
        documents_version=3,
        overrides={"num_train_epochs": 1, "lora.r": 8, "trainer_args": {"seed": 2}},
    ),
    GenerateRequest(
        domain="chemistry",
        adapter="/a/sft/adapter",
        sft_uri="/d/sft_dataset",
        sft_version=7,
        output="/a/sft/eval/predictions.parquet",
        roles=["student", "base"],
        expect_sha256='{"model.safetensors": "ab"}',
        overrides={"max_new_tokens": 32, "bf16": "auto"},
    ),
    BenchmarkRequest(
        domain="biology",
        checkpoint="/a/sft/adapter",
        suite_dir="/data/eval/biology",
        output="/a/sft/eval/benchmark.parquet",
        overrides={"roles": ["student", "read"], "system_prompt": 'You answer "{domain}" questions: briefly.'},
    ),
    TeacherLogitsRequest(
        domain="physics",
        teacher="/a/sft/model",
        sft_uri="/d/sft_dataset",
        sft_version=7,
        documents_uri="/d/raw_documents",
        documents_version=3,
        output="/a/kd/teacher-logits.parquet",
        overrides={"k": 32, "sentence_passes": 1},
    ),
    DistillRequest(
        domain="physics",
        output_dir="/a/distilled",
        teacher="/a/sft/model",
        logits_uri="/d/teacher_logits",
        logits_version=2,
        logits_id="ab12",
        overrides={"keep_layers": 12, "kind": "jsd"},
    ),
    MergeRequest(
        domain="physics",
        checkpoint="/a/sft/model",
        output_dir="/a/release-ab12/model",
        registered_model="nexa-physics",
        tracking_uri="sqlite:////a/mlflow.db",
        experiment_id="1",
        checkpoint_id="ab12",
    ),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=[type(r).__name__ for r in REQUESTS])
def test_a_request_survives_its_argv(request_):
    assert type(request_).parse(request_.argv(), "stage") == request_


def test_the_out_dir_is_where_the_stage_writes():
    read, sft, generate, benchmark, logits, distill, merge = REQUESTS
    assert (read.out_dir, sft.out_dir, distill.out_dir) == ("/a/read", "/a/sft", "/a/distilled")
    assert merge.out_dir == "/a/release-ab12"  # its log beside the release's model folder
    assert merge.registry_tags() == {"domain": "physics", "checkpoint_id": "ab12"}  # no run id given, none tagged
    assert generate.out_dir == benchmark.out_dir == "/a/sft/eval" and logits.out_dir == "/a/kd"


def test_a_bad_role_or_a_missing_input_is_refused(capsys):
    generate = REQUESTS[2]
    with pytest.raises(SystemExit):
        GenerateRequest.parse([*generate.argv(), "--roles", "student,critic"], "stage")
    assert "--roles student,critic: each must be one of student,read,base," in capsys.readouterr().err
    with pytest.raises(SystemExit):
        SFTRequest.parse(["--domain", "physics", "--output-dir", "/a"], "stage")
    assert "--sft-uri" in capsys.readouterr().err
