"""The training launcher: runs `python -m nexa_core.train` where the GPUs are, through Dagster Pipes.

One resource, chosen by `kind`:
- local (default): a subprocess on this machine (CPU or a local GPU), PipesSubprocessClient.
- kubernetes: a pod on a GPU node pool. `pod_spec()` builds the pod (image, GPU requests/limits,
  node selector, tolerations, volumes, env); it is submitted with dagster-k8s's PipesK8sClient when
  that package is installed (`pip install dagster-k8s`).
- slurm: `sbatch_script()` builds the batch script (GPU gres, partition, time, env, command); the
  Pipes context and messages go through files on a filesystem the cluster shares with Dagster.
- aws: an ECS task on GPU container instances through dagster-aws's PipesECSClient;
  `ecs_run_task_params()` builds the request (GPU resource requirement, command, env, network).

Logs, metrics and the checkpoint record come back through Pipes in every case.
"""

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import dagster as dg
from dagster._core.errors import DagsterPipesExecutionError
from pydantic import Field

from nexa_core.train import ERROR_FILE
from resources.delta import PROJECT_ROOT


class LauncherError(RuntimeError):
    pass


class TrainingLauncher(dg.ConfigurableResource):
    kind: Literal["local", "kubernetes", "slurm", "aws"] = "local"
    artifact_root: str = Field(default=str(PROJECT_ROOT / "data" / "artifacts"),
                               description="Where checkpoints are written (a path the trainer can reach)")
    python: str = Field(default=sys.executable, description="Python on the training node")
    usd_per_gpu_hour: float = 0.0
    # kubernetes
    image: str | None = None
    namespace: str = "default"
    gpus: int = 1
    gpu_resource: str = "nvidia.com/gpu"
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

    def failure_reason(self, out_dir: str) -> str | None:
        """What the trainer wrote before failing, when its output folder is readable from here."""
        path = Path(out_dir) / ERROR_FILE
        return path.read_text()[:2000] if "://" not in out_dir and path.is_file() else None

    # --- specs -----------------------------------------------------------------------------

    def pod_spec(self, command: list[str], env: dict[str, str], name: str) -> dict:
        if not self.image:
            raise LauncherError("launcher.kind=kubernetes needs launcher.image (an image with the project installed)")
        limits = {self.gpu_resource: str(self.gpus)} if self.gpus else {}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": {"app.kubernetes.io/name": "nexa-train"}},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": dict(self.node_selector),
                "tolerations": list(self.tolerations),
                "volumes": list(self.volumes),
                "containers": [{
                    "name": "train", "image": self.image, "command": list(command),
                    "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                    "resources": {"requests": {"cpu": self.cpu, "memory": self.memory, **limits},
                                  "limits": {"memory": self.memory, **limits}},
                    "volumeMounts": list(self.volume_mounts),
                }],
            },
        }

    def sbatch_script(self, command: list[str], env: dict[str, str], name: str) -> str:
        lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --time={self.slurm_time}",
                 "#SBATCH --nodes=1", "#SBATCH --ntasks=1", f"#SBATCH --cpus-per-task={self.cpu}",
                 f"#SBATCH --mem={self.memory.replace('Gi', 'G')}"]
        if self.gpus:
            lines.append(f"#SBATCH --gres=gpu:{self.gpus}")
        if self.slurm_partition:
            lines.append(f"#SBATCH --partition={self.slurm_partition}")
        if self.slurm_account:
            lines.append(f"#SBATCH --account={self.slurm_account}")
        if self.shared_dir:
            lines.append(f"#SBATCH --output={self.shared_dir}/{name}.log")
        lines.append("set -euo pipefail")
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        lines.append("exec " + " ".join(shlex.quote(c) for c in command))
        return "\n".join(lines) + "\n"

    def ecs_run_task_params(self, command: list[str], env: dict[str, str]) -> dict:
        if not (self.ecs_cluster and self.ecs_task_definition):
            raise LauncherError("launcher.kind=aws needs launcher.ecs_cluster and launcher.ecs_task_definition")
        params = {
            "cluster": self.ecs_cluster, "taskDefinition": self.ecs_task_definition, "count": 1,
            "launchType": "EC2",  # GPUs on ECS need EC2 container instances, not Fargate
            "overrides": {"containerOverrides": [{
                "name": self.ecs_container, "command": list(command),
                "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
                "resourceRequirements": [{"type": "GPU", "value": str(self.gpus)}],
            }]},
        }
        if self.ecs_subnets:
            params["networkConfiguration"] = {"awsvpcConfiguration": {
                "subnets": list(self.ecs_subnets), "securityGroups": list(self.ecs_security_groups)}}
        return params

    # --- launching -------------------------------------------------------------------------

    def run_reporting(self, context: dg.AssetExecutionContext, command: list[str], env: dict[str, str],
                      out_dir: str, what: str, key: str) -> tuple[dict, list]:
        """Launch an entry point (trainer, reader, generator) and return the JSON `key` it reported
        through Pipes, with any check results; a failure says what the process wrote before dying."""
        try:
            results = self.launch(context, command, env).get_results()
        except LauncherError as exc:
            reason = self.failure_reason(out_dir)
            raise dg.Failure(f"{exc}" + (f"; the {what} said: {reason}" if reason else "")) from exc
        reported = [r for r in results if isinstance(r, dg.MaterializeResult)]
        if not reported:  # e.g. a batch job that died without an exit code Dagster could see
            raise dg.Failure(f"partition {context.partition_key}: the {what} reported nothing; "
                             f"it said: {self.failure_reason(out_dir) or 'nothing'}")
        checks = [r for r in results if isinstance(r, dg.AssetCheckResult)]
        return json.loads(reported[0].metadata[key].value), checks

    def launch(self, context: dg.AssetExecutionContext, command: list[str], env: dict[str, str]):
        where = f"partition {context.partition_key}, launcher.kind={self.kind}"
        try:
            if self.kind == "local":
                return dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT)).run(context=context, command=command, env=env)
            if self.kind == "kubernetes":
                return self._launch_k8s(context, command, env)
            if self.kind == "aws":
                from dagster_aws.pipes import PipesECSClient

                params = self.ecs_run_task_params(command, env)  # config errors before any AWS client exists
                return PipesECSClient().run(context=context, run_task_params=params)
            return self._launch_slurm(context, command, env)
        except DagsterPipesExecutionError as exc:
            raise LauncherError(f"{where}: the training process failed: {exc}") from exc
        except LauncherError as exc:
            raise LauncherError(f"partition {context.partition_key}: {exc}") from exc
        except Exception as exc:  # cluster clients raise their own types (kubernetes, botocore, ...)
            raise LauncherError(f"{where}: could not launch training: {type(exc).__name__}: {exc}") from exc

    def _launch_k8s(self, context, command, env):
        from dagster_k8s import PipesK8sClient  # optional: pip install dagster-k8s

        name = f"nexa-train-{context.run.run_id[:8]}-{context.partition_key}"[:63]
        spec = self.pod_spec(command, env, name)
        return PipesK8sClient().run(context=context, image=self.image, command=command, namespace=self.namespace,
                                    env=env, base_pod_meta=spec["metadata"], base_pod_spec=spec["spec"])

    def _launch_slurm(self, context, command, env):
        if not self.shared_dir:
            raise LauncherError("launcher.kind=slurm: set launcher.shared_dir, "
                                "a folder both Dagster and the Slurm nodes can read and write")
        shared = Path(self.shared_dir)
        name = f"nexa-train-{context.run.run_id[:8]}-{context.partition_key}"
        with dg.open_pipes_session(
                context=context,
                context_injector=dg.PipesFileContextInjector(str(shared / f"{name}.context.json")),
                message_reader=dg.PipesFileMessageReader(str(shared / f"{name}.messages"))) as session:
            script = shared / f"{name}.sbatch"
            script.write_text(self.sbatch_script(command, {**env, **session.get_bootstrap_env_vars()}, name))
            job = subprocess.run(["sbatch", "--parsable", str(script)], check=True, capture_output=True,
                                 text=True).stdout.strip().split(";")[0]
            context.log.info(f"submitted Slurm job {job}")
            while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
                time.sleep(self.poll_seconds)
        return dg.PipesClientCompletedInvocation(session)
