"""student_checkpoint on CPU: the chain up to a trained adapter, resume after a kill, MLflow, specs."""

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import psutil
import pytest
import slurm_cluster
from conftest import SAMPLE_RAW
from graph_helpers import materialize_domain, read_table, resources

from nexa_assets import pretrain, train
from nexa_assets.partitions import domain_partitions
from nexa_core.artifacts import sha256_files
from nexa_core.recipe import FinetuneConfig
from resources.launcher import AwsBackend, KubernetesBackend, LauncherError, SlurmBackend, TrainingLauncher
from resources.tracking import MlflowTracking

FAST = {"max_steps": 6, "save_steps": 3, "eval_steps": 3, "logging_steps": 1, "per_device_train_batch_size": 4}
# a small student that reads the corpus a few steps: enough to exercise every path quickly
FAST_READ = {
    "max_steps": 4,
    "save_steps": 2,
    "student": {"hidden_size": 64, "layers": 2, "heads": 2, "vocab_size": 1024},
}


def train_resources(tmp_path, delta_root, **launcher):
    return {
        **resources(delta_root),
        "launcher": TrainingLauncher(artifact_root=str(tmp_path / "artifacts"), **launcher),
        "tracking": MlflowTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "mlruns")
        ),
    }


def materialize_base(instance, tmp_path, delta_root, overrides, raise_on_error=True):
    return dg.materialize(
        [pretrain.student_base],
        partition_key="physics",
        instance=instance,
        resources=train_resources(tmp_path, delta_root),
        raise_on_error=raise_on_error,
        run_config={"ops": {"student_base": {"config": overrides}}},
    )


def materialize_checkpoint(instance, tmp_path, delta_root, overrides, raise_on_error=True):
    return dg.materialize(
        [pretrain.student_base, train.student_checkpoint],
        selection=[train.student_checkpoint],
        partition_key="physics",
        instance=instance,
        resources=train_resources(tmp_path, delta_root),
        raise_on_error=raise_on_error,
        run_config={"ops": {"student_checkpoint": {"config": overrides}}},
    )


@pytest.fixture(scope="module")
def read_physics(tmp_path_factory):
    """The distillation chain and the student's reading for physics, once for the module."""
    root = tmp_path_factory.mktemp("read_physics")
    shutil.copytree(SAMPLE_RAW, root / "raw")
    (root / "delta").mkdir()
    (root / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        assert materialize_domain(instance, "physics", root / "raw", root / "delta").success
        assert materialize_base(instance, root, root / "delta", FAST_READ).success
    return root / "delta"


@pytest.fixture
def physics_sft(instance, read_physics, tmp_path):
    """What SFT starts from, a copy per test (the read model itself is shared and only read)."""
    delta_root = tmp_path / "sft_delta"
    shutil.copytree(read_physics, delta_root)
    instance.add_dynamic_partitions(domain_partitions.name, ["physics"])
    return delta_root


def base_model_uri(delta_root) -> str:
    return pl.read_delta(str(delta_root / "nexa" / "student_base")).row(0, named=True)["model_uri"]


def test_chain_to_student_checkpoint_then_reload_and_generate(instance, tmp_path, physics_sft, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    result = materialize_checkpoint(instance, tmp_path, physics_sft, {**FAST, "finetune": "lora", "merge": True})
    assert result.success
    record = pl.read_delta(str(physics_sft / "nexa" / "student_checkpoint")).row(0, named=True)
    base = pl.read_delta(str(physics_sft / "nexa" / "student_base")).row(0, named=True)
    assert record["base_id"] == base["base_id"] and record["finetune"] == "lora"
    assert record["domain"] == "physics" and record["steps"] == 6 and record["device"] == "cpu"
    assert record["sft_version"] == read_table(physics_sft, "sft_dataset")[1]
    assert record["final_loss"] > 0 and record["mlflow_run_id"]
    adapter = Path(record["artifact_uri"])
    assert json.loads(record["files_sha256"]) == sha256_files(adapter)
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(
        json.loads(record["files_sha256"])
    )
    checks = [
        e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert [c.check_name for c in checks] == ["loss_decreased"]
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any(m.startswith("step 6: ") and "loss=" in m for m in logs)  # streamed through Pipes
    meta = result.asset_materializations_for_node("student_checkpoint")[0].metadata
    assert meta["steps"].value == 6 and "| step | loss |" in meta["training_curve"].value

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(adapter))
    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is entropy?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(out[0, prompt["input_ids"].shape[1] :]), str)

    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(adapter / "merged"))
    assert merged.config.model_type == "llama" and not hasattr(merged, "peft_config")

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["lora.r"] == "16"
    assert "loss" in run.data.metrics and run.data.params["max_steps"] == "6"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == list(range(1, 7))


def kill_after_first_checkpoint(materialize, out_dir: Path, module: str) -> int:
    """Run `materialize` in a thread, SIGKILL the `python -m module` process it launches once a trainer
    checkpoint is complete, check the run failed with nothing committed; the newest saved step."""
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("first", materialize()))
    runner.start()
    deadline = time.time() + 300
    while not list((out_dir / "trainer").glob("checkpoint-*/trainer_state.json")):
        assert time.time() < deadline and runner.is_alive(), "no checkpoint was saved"
        time.sleep(0.2)
    processes = [p for p in psutil.Process().children(recursive=True) if module in " ".join(p.cmdline())]
    assert len(processes) == 1
    os.kill(processes[0].pid, signal.SIGKILL)
    runner.join(timeout=120)
    assert not outcome["first"].success
    assert not (out_dir / "model").exists() and not (out_dir / "adapter").exists()  # nothing half-done committed
    return max(int(p.parent.name.split("-")[1]) for p in (out_dir / "trainer").glob("checkpoint-*/trainer_state.json"))


def test_killed_training_resumes_from_its_last_checkpoint(instance, tmp_path, physics_sft):
    overrides = {**FAST, "max_steps": 20, "save_steps": 4, "eval_steps": 100}
    out_dir = Path(
        TrainingLauncher(artifact_root=str(tmp_path / "artifacts")).output_dir(
            "physics",
            read_table(physics_sft, "sft_dataset")[1],
            FinetuneConfig.load(overrides={**overrides, "base_model": base_model_uri(physics_sft)}).digest(),
        )
    )
    saved = kill_after_first_checkpoint(
        lambda: materialize_checkpoint(instance, tmp_path, physics_sft, overrides, raise_on_error=False),
        out_dir,
        "nexa_core.train.trainer",
    )

    second = materialize_checkpoint(instance, tmp_path, physics_sft, overrides)
    assert second.success
    record = pl.read_delta(str(physics_sft / "nexa" / "student_checkpoint")).row(0, named=True)
    assert record["resumed_from"].endswith(f"checkpoint-{saved}") and saved < 20
    assert record["steps"] == 20


def test_tiny_sft_set_and_bad_lora_target_fail_with_the_setting_named(instance, tmp_path, physics_sft):
    tiny = materialize_checkpoint(
        instance, tmp_path, physics_sft, {**FAST, "min_train_examples": 100000}, raise_on_error=False
    )
    assert not tiny.success
    text = str(next(e for e in tiny.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error)
    assert "partition physics" in text and "min_train_examples" in text
    bad = materialize_checkpoint(
        instance,
        tmp_path,
        physics_sft,
        {**FAST, "finetune": "lora", "lora": {"target_modules": ["c_attn"]}},
        raise_on_error=False,
    )
    text = str(next(e for e in bad.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error)
    assert "lora.target_modules" in text and "c_attn" in text
    elsewhere = materialize_checkpoint(
        instance, tmp_path, physics_sft, {**FAST, "base_model": "x"}, raise_on_error=False
    )
    text = str(next(e for e in elsewhere.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error)
    assert "partition physics" in text and "student_base" in text  # the base is chosen where the student reads
    missing = materialize_base(
        instance, tmp_path, physics_sft, {"base_model": str(tmp_path / "none")}, raise_on_error=False
    )
    text = str(next(e for e in missing.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error)
    assert "partition physics" in text and "base_model" in text and str(tmp_path / "none") in text


def test_pod_spec_and_sbatch_script_field_by_field():
    launcher = TrainingLauncher(
        kind="kubernetes",
        image="registry.example/nexa:1.0",
        namespace="ml",
        gpus=2,
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "nexa-data"}}],
        volume_mounts=[{"name": "data", "mountPath": "/data"}],
        slurm_partition="gpu",
        slurm_account="distil",
        shared_dir="/shared/nexa",
    )
    command = ["python", "-m", "nexa_core.train.trainer", "--domain", "physics", "--output-dir", "/data/artifacts/x"]
    env = {"AWS_REGION": "eu-west-1", "NEXA_FLAG": "a b"}
    assert isinstance(launcher.backend(), KubernetesBackend)
    pod = launcher.backend().pod_spec(command, env, "nexa-train-1")
    container = pod["spec"]["containers"][0]
    assert pod["metadata"] == {
        "name": "nexa-train-1",
        "namespace": "ml",
        "labels": {"app.kubernetes.io/name": "nexa-train"},
    }
    assert container["image"] == "registry.example/nexa:1.0" and container["command"] == command
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert container["env"] == [{"name": "AWS_REGION", "value": "eu-west-1"}, {"name": "NEXA_FLAG", "value": "a b"}]
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "nexa-data"
    assert pod["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["spec"]["restartPolicy"] == "Never"

    script = SlurmBackend(launcher).sbatch_script(command, env, "nexa-train-1").splitlines()
    assert script[0] == "#!/bin/bash"
    for line in (
        "#SBATCH --gres=gpu:2",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=distil",
        "#SBATCH --job-name=nexa-train-1",
        "#SBATCH --output=/shared/nexa/nexa-train-1.log",
        "export AWS_REGION=eu-west-1",
        "export NEXA_FLAG='a b'",
        "exec python -m nexa_core.train.trainer --domain physics --output-dir /data/artifacts/x",
    ):
        assert line in script
    aws_launcher = TrainingLauncher(
        kind="aws",
        ecs_cluster="gpu-cluster",
        ecs_task_definition="nexa-train:3",
        gpus=1,
        ecs_subnets=["subnet-1"],
        ecs_security_groups=["sg-1"],
    )
    assert isinstance(aws_launcher.backend(), AwsBackend)
    aws = aws_launcher.backend().ecs_run_task_params(command, env)
    container = aws["overrides"]["containerOverrides"][0]
    assert aws["cluster"] == "gpu-cluster" and aws["taskDefinition"] == "nexa-train:3" and aws["launchType"] == "EC2"
    assert container["command"] == command and container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert container["environment"][0] == {"name": "AWS_REGION", "value": "eu-west-1"}
    assert aws["networkConfiguration"]["awsvpcConfiguration"] == {"subnets": ["subnet-1"], "securityGroups": ["sg-1"]}
    with pytest.raises(LauncherError, match="launcher.image"):
        TrainingLauncher(kind="kubernetes").backend().pod_spec(command, env, "x")


@pytest.mark.parametrize(
    "launcher, words",
    [
        ({"kind": "kubernetes", "image": "nexa:dev"}, ["launcher.kind=kubernetes", "dagster_k8s"]),
        ({"kind": "slurm"}, ["launcher.kind=slurm", "shared_dir"]),
        ({"kind": "aws"}, ["launcher.kind=aws", "ecs_cluster"]),  # fails on config, before any AWS call
    ],
)
def test_unreachable_launcher_is_a_clear_error(instance, tmp_path, physics_sft, launcher, words):
    result = dg.materialize(
        [pretrain.student_base, train.student_checkpoint],
        selection=[train.student_checkpoint],
        partition_key="physics",
        instance=instance,
        resources=train_resources(tmp_path, physics_sft, **launcher),
        raise_on_error=False,
    )
    text = str(next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error)
    assert "partition physics" in text and all(w in text for w in words), text[:500]


@pytest.mark.slow
@pytest.mark.skipif(not slurm_cluster.available(), reason="needs root and Debian's slurmd, slurmctld, munge")
def test_slurm_launcher_on_a_real_single_node_cluster(instance, tmp_path, physics_sft, monkeypatch):
    cluster = tmp_path / "slurm"
    for key, value in slurm_cluster.start(cluster).items():
        monkeypatch.setenv(key, value)
    try:
        shared = tmp_path / "shared"
        shared.mkdir()
        result = dg.materialize(
            [pretrain.student_base, train.student_checkpoint],
            selection=[train.student_checkpoint],
            partition_key="physics",
            instance=instance,
            resources=train_resources(
                tmp_path,
                physics_sft,
                kind="slurm",
                gpus=0,
                cpu="2",
                memory="2Gi",
                shared_dir=str(shared),
                poll_seconds=1,
            ),
            run_config={"ops": {"student_checkpoint": {"config": FAST}}},
        )
        assert result.success
        record = pl.read_delta(str(physics_sft / "nexa" / "student_checkpoint")).row(0, named=True)
        assert record["steps"] == 6 and Path(record["artifact_uri"], "manifest.json").is_file()
        script = next(shared.glob("*.sbatch")).read_text()
        assert "#SBATCH --job-name=nexa-train-" in script and "DAGSTER_PIPES_CONTEXT" in script
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
        assert any("submitted Slurm job" in m for m in logs)
    finally:
        slurm_cluster.stop(cluster)


def test_packing_length_fits_the_longest_example_without_varlen_attention():
    from nexa_core.train.rows import packing_length

    assert packing_length([50, 120, 30], 512, varlen_attention=False) == 128
    assert packing_length([129], 512, varlen_attention=False) == 256
    assert packing_length([10], 512, varlen_attention=False) == 64
    assert packing_length([900], 512, varlen_attention=False) == 512  # the cap still truncates
    assert packing_length([50], 512, varlen_attention=True) == 512


def test_packed_rows_keep_their_documents_apart(tmp_path):
    """With packing the trainer's batch is one padding-free row with each document's own positions and no
    attention mask; SDPA then masks across document boundaries: each document's logits in the packed row are its
    logits alone."""
    import torch

    from nexa_core.models.load import load_student
    from nexa_core.train.fit import fit
    from nexa_core.train.rows import document_rows
    from nexa_core.train.student import build_default_student

    texts = [f"Document {i} says the answer is {i * 7} and nothing else of note {i}." * (1 + i % 3) for i in range(8)]
    folder = str(build_default_student(texts, tmp_path / "m", vocab_size=300))
    model, tokenizer = load_student(folder)
    config = FinetuneConfig.load(overrides={"max_steps": 1, "packing": True, "max_length": 256})
    trainer = fit(model, tokenizer, document_rows(tokenizer, texts, 256), [], config, tmp_path / "run", "physics")[
        "trainer"
    ]
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist()
    assert len(starts) > 1  # several documents in the row
    model = load_student(folder)[0].eval()  # in fp32: the trainer's own model runs under its autocast
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        for start, end in zip(starts, starts[1:] + [len(positions)]):
            alone = model(input_ids=batch["input_ids"][:, start:end], use_cache=False).logits[0]
            torch.testing.assert_close(packed[start:end], alone, atol=1e-4, rtol=1e-4)


def test_cuda_loads_keep_sdpa_off_cudnn(tmp_path, monkeypatch):
    """cuDNN's SDPA plans every new shape (seen on an H100: 40% of a training step); the loader turns it off on
    CUDA, and leaves the process alone on a CPU."""
    import torch

    from nexa_core.models.load import load_student
    from nexa_core.train.student import build_default_student

    folder = build_default_student(["The speed of light is a constant."] * 4, tmp_path / "m", vocab_size=300)
    torch.backends.cuda.enable_cudnn_sdp(True)
    load_student(str(folder))
    assert torch.backends.cuda.cudnn_sdp_enabled()  # no CUDA here: untouched
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        load_student(str(folder))
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)


def test_attention_and_trainer_args_from_the_config_reach_the_trainer(tmp_path):
    from nexa_core.models.load import load_student
    from nexa_core.train.fit import fit
    from nexa_core.train.rows import conversation_rows
    from nexa_core.train.start import attention
    from nexa_core.train.student import build_default_student

    config = FinetuneConfig.load(
        overrides={
            "max_steps": 1,
            "packing": False,
            "attn_implementation": "eager",
            "trainer_args.train_sampling_strategy": "group_by_length",
            "trainer_args.max_grad_norm": 0.5,
        }
    )
    assert attention(FinetuneConfig.defaults()) is None and attention(config) == "eager"
    texts = [f"Question {i}? Answer {i}." for i in range(8)]
    model, tokenizer = load_student(
        str(build_default_student(texts, tmp_path / "m", vocab_size=300)), attn_implementation=attention(config)
    )
    assert model.config._attn_implementation == "eager"
    rows = conversation_rows(
        tokenizer,
        [
            [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
            for i in range(8)
        ],
    )
    trainer = fit(model, tokenizer, rows, [], config, tmp_path / "run", "physics", log=lambda m: None)["trainer"]
    assert trainer.args.train_sampling_strategy == "group_by_length" and trainer.args.max_grad_norm == 0.5


def test_several_gpus_run_training_under_torchrun_and_several_nodes_only_on_slurm():
    args = ["--domain", "physics"]
    one = TrainingLauncher(gpus=1)
    assert one.command("nexa_core.train.trainer", args, distributed=True) == [
        one.python,
        "-m",
        "nexa_core.train.trainer",
        *args,
    ]
    four = TrainingLauncher(kind="kubernetes", image="i", gpus=4)
    assert four.command("nexa_core.train.trainer", args, distributed=True) == [
        four.python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=4",
        "-m",
        "nexa_core.train.trainer",
        *args,
    ]
    assert four.command("nexa_core.evaluate.generate", args) == [
        four.python,
        "-m",
        "nexa_core.evaluate.generate",
        *args,
    ]  # one process
    with pytest.raises(LauncherError, match="nodes=2.*kind=slurm"):
        TrainingLauncher(kind="kubernetes", image="i", gpus=4, nodes=2).command("nexa_core.train.trainer", args, True)
    slurm = TrainingLauncher(kind="slurm", gpus=8, nodes=2, shared_dir="/shared")
    command = slurm.command("nexa_core.train.trainer", args, distributed=True)
    assert command[:2] == ["srun", slurm.python] and "--nnodes=2" in command and "--nproc-per-node=8" in command
    script = slurm.backend().sbatch_script(command, {}, "nexa-train-2").splitlines()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gres=gpu:8" in script
    assert any(line.startswith("export NEXA_RDZV_HOST=") for line in script)
    assert script[-1].startswith("exec srun ") and "--rdzv-endpoint=${NEXA_RDZV_HOST}:29500" in script[-1]


def test_credentials_reach_every_backend_by_reference_never_as_values(monkeypatch, tmp_path):
    """With AWS keys and a teacher key in the environment, none of the generated specs, scripts or
    resource configs holds them: the launched stages get the Delta root's endpoint and region, and
    credentials come from the node (Kubernetes secrets by name, a task role, the node's own setup)."""
    from resources.environment import Environment

    secret, teacher_key = "AKIAEXAMPLE/abc+SECRET123", "sk-live-teacher-key-1234"
    monkeypatch.setenv("NEXA_DELTA_ROOT", "s3://nexa/delta")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("NEXA_TEACHER_BASE_URL", "https://api.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", teacher_key)
    env = Environment.read()
    launched_env = dict(env.storage_options)  # what the assets hand every launched stage
    command = ["python", "-m", "nexa_core.train.trainer", "--domain", "physics"]
    generated = {
        "pod spec": json.dumps(
            TrainingLauncher(kind="kubernetes", image="i", env_secrets=["nexa-aws"])
            .backend()
            .pod_spec(command, launched_env, "nexa-train-1")
        ),
        "sbatch script": SlurmBackend(TrainingLauncher(kind="slurm", shared_dir=str(tmp_path))).sbatch_script(
            command, launched_env, "nexa-train-1"
        ),
        "ECS overrides": json.dumps(
            TrainingLauncher(kind="aws", ecs_cluster="c", ecs_task_definition="t")
            .backend()
            .ecs_run_task_params(command, launched_env)
        ),
        "IO manager config": env.delta_storage.model_dump_json(),
        "Delta store options": json.dumps(env.storage_options),
        "teacher resource config": json.dumps(env.teacher._convert_to_config_dictionary(), default=str),
    }
    for where, text in generated.items():
        for value in (secret, "AKIAEXAMPLEID", teacher_key):
            assert value not in text, f"{value} in the {where}"
    assert json.loads(generated["pod spec"])["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "nexa-aws"}}
    ]
    assert "AWS_S3_ALLOW_UNSAFE_RENAME" not in generated["Delta store options"]


@pytest.mark.heavy  # two DDP processes on a CPU: a minute of 2 cores; one process trains in the default run
@pytest.mark.slow
def test_two_gloo_processes_train_the_same_checkpoint_as_one(tmp_path, raw_root, delta_root, dagster_home):
    """launcher.gpus=2 on a CPU machine: two DDP processes (gloo) under torchrun. Rank 0 alone reports
    and commits: one record, one model, the same steps and loss as one process with the same global batch."""
    records = {}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert materialize_domain(instance, "physics", raw_root, delta_root).success
        assert materialize_base(instance, tmp_path, delta_root, FAST_READ).success
        for gpus, batch in ((1, 4), (2, 2)):
            artifacts = tmp_path / f"artifacts-{gpus}"
            run = dg.materialize(
                [pretrain.student_base, train.student_checkpoint],
                selection=[train.student_checkpoint],
                partition_key="physics",
                instance=instance,
                resources={
                    **train_resources(tmp_path, delta_root),
                    "launcher": TrainingLauncher(artifact_root=str(artifacts), gpus=gpus),
                },
                run_config={
                    "ops": {
                        "student_checkpoint": {
                            "config": {**FAST, "per_device_train_batch_size": batch, "replay_documents": 0}
                        }
                    }
                },
            )
            assert run.success
            row = pl.read_delta(str(delta_root / "nexa" / "student_checkpoint")).row(0, named=True)
            manifests = list(artifacts.rglob("manifest.json"))
            assert len(manifests) == 1  # one model committed, by rank 0
            records[gpus] = {**json.loads(manifests[0].read_text()), "row": row}
    one, two = records[1], records[2]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["steps"] == two["steps"] == FAST["max_steps"]
    assert set(one["files"]) == set(two["files"])  # the same model files
    assert abs(one["final_loss"] - two["final_loss"]) < 0.05 * one["final_loss"]
    assert two["row"]["steps"] == two["steps"] and two["row"]["artifact_uri"].startswith(str(tmp_path / "artifacts-2"))
