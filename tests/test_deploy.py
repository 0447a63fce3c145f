"""Kubernetes deployment files, checked structurally: no Docker engine or cluster runs here, so the
images are not built and helm is not run (README says so). What can be checked is that the Helm
values, the Dockerfiles, the launcher config and the instance file agree with each other and with the
code."""

import importlib
import re

import yaml
from conftest import PROJECT

DEPLOY = PROJECT / "deploy"
IMAGES = yaml.safe_load((DEPLOY / "images.yaml").read_text())
VALUES = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
LAUNCHER = yaml.safe_load((DEPLOY / "launcher-kubernetes.yaml").read_text())


def pinned() -> dict[str, str]:
    lines = (PROJECT / "constraints.txt").read_text().splitlines()
    return dict(
        line.lower().replace("_", "-").split("==", 1) for line in lines if "==" in line and not line.startswith("#")
    )


def dockerfile(name: str) -> str:
    return (DEPLOY / name).read_text()


def test_the_user_deployment_serves_this_code_location_from_the_code_image():
    (deployment,) = VALUES["dagster-user-deployments"]["deployments"]
    image = deployment["image"]
    assert f"{image['repository']}:{image['tag']}" == IMAGES["code"]
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("-m") + 1]
    assert module == "nexa_assets.definitions" and hasattr(importlib.import_module(module), "defs")
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile("Dockerfile.code"), re.M).group(1)
    assert module in cmd and str(deployment["port"]) in cmd  # the image's own command serves the same


def test_launched_stages_run_on_gpu_pods_of_the_trainer_image():
    from resources.launcher import TrainingLauncher

    launcher = TrainingLauncher(**LAUNCHER)
    assert launcher.kind == "kubernetes" and launcher.image == IMAGES["trainer"]
    trainer = dockerfile("Dockerfile.trainer")
    assert launcher.python.startswith("/opt/venv/bin/") and "venv /opt/venv" in trainer
    assert "COPY nexa_core nexa_core" in trainer and "pip install --no-deps ." in trainer
    backend = launcher.backend()
    spec = backend.pod_spec([launcher.python, "-m", "nexa_core.train.trainer"], {"NEXA_FLAG": "1"}, "nexa-train-x")
    (container,) = spec["spec"]["containers"]
    assert container["image"] == IMAGES["trainer"] and container["command"][0] == launcher.python
    assert container["resources"]["limits"][launcher.gpu_resource] == str(launcher.gpus) == "1"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert launcher.artifact_root in mounts  # checkpoints land where the code location reads them
    # the code image points the launcher at this file
    path = "/opt/nexa/deploy/launcher-kubernetes.yaml"
    assert f"NEXA_LAUNCHER_CONFIG={path}" in dockerfile("Dockerfile.code")
    env = {e["name"]: e.get("value") for e in VALUES["dagster-user-deployments"]["deployments"][0]["env"]}
    assert env["NEXA_LAUNCHER_CONFIG"] == path and env["NEXA_ARTIFACT_ROOT"] == launcher.artifact_root


def test_every_package_the_images_install_is_pinned_by_constraints():
    versions = pinned()
    torch = versions["torch"].split("+")[0]  # the CPU build here; the trainer image takes the CUDA build
    assert "-c constraints.txt" in dockerfile("Dockerfile.code")
    for name in ("Dockerfile.code", "Dockerfile.trainer"):
        assert f"torch=={torch}" in dockerfile(name), name
    trainer = dockerfile("Dockerfile.trainer")
    assert "grep -v '^torch==' constraints.txt > /tmp/constraints.txt" in trainer
    install = re.search(r"pip install -c /tmp/constraints.txt (.*?)\n && pip install --no-deps", trainer, re.S).group(1)
    packages = [re.sub(r"\[.*|==.*", "", p.strip('"\\ ')).lower() for p in install.split() if p.strip("\\")]
    missing = [p for p in packages if p and p not in versions]
    assert not missing, f"not pinned in constraints.txt: {missing}"
    assert "dagster-pipes" in packages and "dagster" not in packages  # the node needs Pipes, not Dagster


def test_run_queue_and_gpu_pool_match_the_instance_file():
    instance = yaml.safe_load((PROJECT / "dagster.yaml").read_text())["concurrency"]
    queued = VALUES["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == instance["runs"]["max_concurrent_runs"]
    assert [{"key": t["key"], "limit": t["limit"]} for t in queued["tagConcurrencyLimits"]] == instance["runs"][
        "tag_concurrency_limits"
    ]
    assert VALUES["concurrency"]["pools"]["defaultLimit"] == instance["pools"]["default_limit"]
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher" and VALUES["postgresql"]["enabled"]


def test_no_secret_value_in_any_deployment_file():
    secret_like = re.compile(r"(password|secret_access_key|api_key|token)\s*[:=]\s*\S", re.I)
    for path in [*DEPLOY.rglob("*.yaml"), *DEPLOY.glob("Dockerfile.*")]:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            assert not secret_like.search(line.split("#")[0]), f"{path.name}:{number}: {line}"
    secrets = [s["name"] for s in VALUES["dagster-user-deployments"]["deployments"][0]["envSecrets"]]
    assert set(LAUNCHER["env_secrets"]) <= set(secrets)  # the pods get the secrets the code location has
