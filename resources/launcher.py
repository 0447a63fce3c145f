"""The training launcher: runs `python -m nexa_core.train.trainer` (and the reading, generation and benchmark
stages) where the GPUs are, through Dagster Pipes.

The resource, TrainingLauncher, is the configuration; `kind` picks the backend that launches:
- LocalBackend (default): a subprocess on this machine (CPU or a local GPU), PipesSubprocessClient.
- KubernetesBackend: a pod on a GPU node pool. `pod_spec()` builds the pod (image, GPU requests/limits,
  node selector, tolerations, volumes, env); it is submitted with dagster-k8s's PipesK8sClient when
  that package is installed (`pip install dagster-k8s`).
- SlurmBackend: `sbatch_script()` builds the batch script (GPU gres, partition, time, env, command);
  the Pipes context and messages go through files on a filesystem the cluster shares with Dagster.
- AwsBackend: an ECS task on GPU container instances through dagster-aws's PipesECSClient;
  `ecs_run_task_params()` builds the request (GPU resource requirement, command, env, network).

Logs, metrics and the checkpoint record come back through Pipes in every case.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal

import dagster as dg
from dagster._core.errors import DagsterPipesExecutionError
from pydantic import Field

from nexa_core.models.checkpoint import CheckpointError, verify_checkpoint
from nexa_core.stage import ERROR_FILE, StageRequest
from resources.delta import PROJECT_ROOT
from resources.pipes_reader import WholeLineMessageReader


class LauncherError(RuntimeError):
    pass


def job_name(context: dg.AssetExecutionContext) -> str:
    return f"nexa-train-{context.run.run_id[:8]}-{context.partition_key}"


def env_list(env: dict[str, str]) -> list[dict]:
    """Environment variables as Kubernetes and ECS take them: name/value pairs, sorted."""
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


class LaunchBackend(ABC):
    """Where a launched stage runs. It reads the resource's settings and starts the process; the
    resource turns what comes back into records and errors."""

    kind: str
    runs_here = False  # the process sees this machine's files: checkpoints are verified and logged from here

    def __init__(self, settings: TrainingLauncher):
        self.settings = settings

    @abstractmethod
    def launch(
        self, context: dg.AssetExecutionContext, command: list[str], env: dict[str, str]
    ) -> dg.PipesClientCompletedInvocation:
        """Run `command` with `env` through Pipes until it ends; a wrong setting is a LauncherError."""

    def torchrun(self, module: str, arguments: list[str]) -> list[str]:
        """`module` under torchrun on one node, one process per GPU (gloo processes on a CPU machine)."""
        s = self.settings
        if s.nodes > 1:
            raise LauncherError(
                f"launcher.nodes={s.nodes}: training over several nodes runs on kind=slurm; "
                f"kind={self.kind} trains on one node (launcher.gpus GPUs)"
            )
        return [
            s.python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={s.gpus}",
            "-m",
            module,
            *arguments,
        ]


class LocalBackend(LaunchBackend):
    kind = "local"
    runs_here = True

    def launch(self, context, command, env):
        client = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT), message_reader=WholeLineMessageReader())
        return client.run(context=context, command=command, env=env)


class KubernetesBackend(LaunchBackend):
    kind = "kubernetes"

    def pod_spec(self, command: list[str], env: dict[str, str], name: str) -> dict:
        s = self.settings
        if not s.image:
            raise LauncherError("launcher.kind=kubernetes needs launcher.image (an image with the project installed)")
        limits = {s.gpu_resource: str(s.gpus)} if s.gpus else {}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": s.namespace, "labels": {"app.kubernetes.io/name": "nexa-train"}},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": dict(s.node_selector),
                "tolerations": list(s.tolerations),
                "volumes": list(s.volumes),
                "containers": [
                    {
                        "name": "train",
                        "image": s.image,
                        "command": list(command),
                        "env": env_list(env),
                        "envFrom": [{"secretRef": {"name": name}} for name in s.env_secrets],
                        "resources": {
                            "requests": {"cpu": s.cpu, "memory": s.memory, **limits},
                            "limits": {"memory": s.memory, **limits},
                        },
                        "volumeMounts": list(s.volume_mounts),
                    }
                ],
            },
        }

    def launch(self, context, command, env):
        from dagster_k8s import PipesK8sClient  # optional: pip install dagster-k8s

        spec = self.pod_spec(command, env, job_name(context)[:63])
        return PipesK8sClient().run(
            context=context,
            image=self.settings.image,
            command=command,
            namespace=self.settings.namespace,
            env=env,
            base_pod_meta=spec["metadata"],
            base_pod_spec=spec["spec"],
        )


class SlurmBackend(LaunchBackend):
    kind = "slurm"

    def torchrun(self, module: str, arguments: list[str]) -> list[str]:
        """One torchrun per node (srun starts them), meeting at the job's first node."""
        s = self.settings
        if s.nodes == 1:
            return super().torchrun(module, arguments)
        return [
            "srun",
            s.python,
            "-m",
            "torch.distributed.run",
            f"--nnodes={s.nodes}",
            f"--nproc-per-node={s.gpus}",
            "--rdzv-backend=c10d",
            "--rdzv-endpoint=${NEXA_RDZV_HOST}:29500",
            "--rdzv-id=${SLURM_JOB_ID}",
            "-m",
            module,
            *arguments,
        ]

    def sbatch_script(self, command: list[str], env: dict[str, str], name: str) -> str:
        s = self.settings
        lines = [
            "#!/bin/bash",
            f"#SBATCH --job-name={name}",
            f"#SBATCH --time={s.slurm_time}",
            f"#SBATCH --nodes={s.nodes}",
            "#SBATCH --ntasks-per-node=1",
            f"#SBATCH --cpus-per-task={s.cpu}",
            f"#SBATCH --mem={s.memory.replace('Gi', 'G')}",
        ]
        if s.gpus:
            lines.append(f"#SBATCH --gres=gpu:{s.gpus}")
        if s.slurm_partition:
            lines.append(f"#SBATCH --partition={s.slurm_partition}")
        if s.slurm_account:
            lines.append(f"#SBATCH --account={s.slurm_account}")
        if s.shared_dir:
            lines.append(f"#SBATCH --output={s.shared_dir}/{name}.log")
        lines.append("set -euo pipefail")
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        if s.nodes > 1:  # the rendezvous host, and the ${...} of the torchrun line left for the shell to fill in
            lines.append('export NEXA_RDZV_HOST="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"')
            lines.append("exec " + " ".join(c if c.startswith("--rdzv-") else shlex.quote(c) for c in command))
        else:
            lines.append("exec " + " ".join(shlex.quote(c) for c in command))
        return "\n".join(lines) + "\n"

    def launch(self, context, command, env):
        if not self.settings.shared_dir:
            raise LauncherError(
                "launcher.kind=slurm: set launcher.shared_dir, "
                "a folder both Dagster and the Slurm nodes can read and write"
            )
        shared, name = Path(self.settings.shared_dir), job_name(context)
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesFileContextInjector(str(shared / f"{name}.context.json")),
            message_reader=WholeLineMessageReader(str(shared / f"{name}.messages")),
        ) as session:
            script = shared / f"{name}.sbatch"
            script.write_text(self.sbatch_script(command, {**env, **session.get_bootstrap_env_vars()}, name))
            job = (
                subprocess.run(["sbatch", "--parsable", str(script)], check=True, capture_output=True, text=True)
                .stdout.strip()
                .split(";")[0]
            )
            context.log.info(f"submitted Slurm job {job}")
            while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
                time.sleep(self.settings.poll_seconds)
        return dg.PipesClientCompletedInvocation(session)


class AwsBackend(LaunchBackend):
    kind = "aws"

    def ecs_run_task_params(self, command: list[str], env: dict[str, str]) -> dict:
        s = self.settings
        if not (s.ecs_cluster and s.ecs_task_definition):
            raise LauncherError("launcher.kind=aws needs launcher.ecs_cluster and launcher.ecs_task_definition")
        params = {
            "cluster": s.ecs_cluster,
            "taskDefinition": s.ecs_task_definition,
            "count": 1,
            "launchType": "EC2",  # GPUs on ECS need EC2 container instances, not Fargate
            "overrides": {
                "containerOverrides": [
                    {
                        "name": s.ecs_container,
                        "command": list(command),
                        "environment": env_list(env),
                        "resourceRequirements": [{"type": "GPU", "value": str(s.gpus)}],
                    }
                ]
            },
        }
        if s.ecs_subnets:
            params["networkConfiguration"] = {
                "awsvpcConfiguration": {"subnets": list(s.ecs_subnets), "securityGroups": list(s.ecs_security_groups)}
            }
        return params

    def launch(self, context, command, env):
        from dagster_aws.pipes import PipesECSClient

        params = self.ecs_run_task_params(command, env)  # config errors before any AWS client exists
        return PipesECSClient().run(context=context, run_task_params=params)


BACKENDS = {backend.kind: backend for backend in (LocalBackend, KubernetesBackend, SlurmBackend, AwsBackend)}


class TrainingLauncher(dg.ConfigurableResource):
    """Where launched stages run and with what: the settings of every backend (`kind` picks one)."""

    kind: Literal["local", "kubernetes", "slurm", "aws"] = "local"
    artifact_root: str = Field(
        default=str(PROJECT_ROOT / "data" / "artifacts"),
        description="Where checkpoints are written (a path the trainer can reach)",
    )
    python: str = Field(default=sys.executable, description="Python on the training node")
    usd_per_gpu_hour: float = 0.0
    # kubernetes
    image: str | None = None
    namespace: str = "default"
    gpus: int = Field(
        default=1,
        description="GPUs per node; more than one runs training and reading under torchrun "
        "(DDP; FSDP through trainer_args), one process per GPU",
    )
    nodes: int = Field(default=1, description="Nodes per training run (Slurm); each runs `gpus` processes")
    gpu_resource: str = "nvidia.com/gpu"
    env_secrets: list[str] = Field(
        default=[],
        description="Kubernetes secrets whose keys become the pod's environment "
        "(credentials by reference, never values in the spec)",
    )
    node_selector: dict[str, str] = {}
    tolerations: list[dict] = []
    volumes: list[dict] = []
    volume_mounts: list[dict] = []
    cpu: str = "8"
    memory: str = "64Gi"
    # slurm
    slurm_partition: str | None = None
    slurm_time: str = "04:00:00"
    slurm_account: str | None = None
    shared_dir: str | None = Field(default=None, description="Folder shared by Dagster and the Slurm nodes")
    # aws (ECS on GPU instances)
    ecs_cluster: str | None = None
    ecs_task_definition: str | None = None
    ecs_container: str = "train"
    ecs_subnets: list[str] = []
    ecs_security_groups: list[str] = []
    poll_seconds: float = 10.0

    def output_dir(self, domain: str, sft_version: int, config_hash: str, stage: str = "sft") -> str:
        # Same inputs, same folder: a re-materialization after a crash finds the trainer's checkpoints.
        return f"{self.artifact_root.rstrip('/')}/{domain}/{stage}-v{sft_version}-{config_hash}"

    def bases_dir(self) -> str:
        """Where named bases are converted once, for every domain (nexa_core/models/bases.py)."""
        return f"{self.artifact_root.rstrip('/')}/bases"

    def failure_reason(self, out_dir: str) -> str | None:
        """What the trainer wrote before failing, when its output folder is readable from here."""
        path = Path(out_dir) / ERROR_FILE
        return path.read_text()[:2000] if "://" not in out_dir and path.is_file() else None

    def backend(self) -> LaunchBackend:
        return BACKENDS[self.kind](self)

    def check_checkpoint(self, domain: str, checkpoint: dict) -> None:
        """Check a checkpoint's files against their recorded sha256s where they are on this machine; a
        remote node checks them itself (the stages' --expect-sha256)."""
        if not self.backend().runs_here:
            return
        try:
            verify_checkpoint(checkpoint["artifact_uri"], json.loads(checkpoint["files_sha256"]))
        except CheckpointError as exc:
            raise dg.Failure(f"partition {domain}: {exc}") from exc

    def command(self, module: str, arguments: list[str], distributed: bool = False) -> list[str]:
        """`python -m module ...`, or for a stage that trains (`distributed`) on more than one GPU,
        the same under torchrun, one process per GPU; only rank 0 reports and commits."""
        if not distributed or self.gpus * self.nodes <= 1:
            return [self.python, "-m", module, *arguments]
        return self.backend().torchrun(module, arguments)

    def run_stage(
        self, context: dg.AssetExecutionContext, request: StageRequest, env: dict[str, str]
    ) -> tuple[dict, list]:
        """Launch the stage that serves `request` (reader, trainer, generator, benchmark runner) and return
        the result it reported through Pipes, with any check results; a failure says what the process wrote
        before dying."""
        out_dir, what, key = request.out_dir, request.process, request.result
        try:
            command = self.command(request.module, request.argv(), request.distributed)
            results = self.launch(context, command, env).get_results()
        except LauncherError as exc:
            reason = self.failure_reason(out_dir)
            raise dg.Failure(f"{exc}" + (f"; the {what} said: {reason}" if reason else "")) from exc
        reported = [r for r in results if isinstance(r, dg.MaterializeResult)]
        if not reported:  # e.g. a batch job that died without an exit code Dagster could see
            raise dg.Failure(
                f"partition {context.partition_key}: the {what} reported nothing; "
                f"it said: {self.failure_reason(out_dir) or 'nothing'}"
            )
        checks = [r for r in results if isinstance(r, dg.AssetCheckResult)]
        return json.loads(reported[0].metadata[key].value), checks

    def launch(self, context: dg.AssetExecutionContext, command: list[str], env: dict[str, str]):
        where = f"partition {context.partition_key}, launcher.kind={self.kind}"
        try:
            return self.backend().launch(context, command, env)
        except DagsterPipesExecutionError as exc:
            raise LauncherError(f"{where}: the training process failed: {exc}") from exc
        except LauncherError as exc:
            raise LauncherError(f"partition {context.partition_key}: {exc}") from exc
        except Exception as exc:  # cluster clients raise their own types (kubernetes, botocore, ...)
            raise LauncherError(f"{where}: could not launch training: {type(exc).__name__}: {exc}") from exc
