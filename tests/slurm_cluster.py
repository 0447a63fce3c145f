"""A real single-node Slurm cluster (Debian's slurmctld, slurmd, munge) in a temporary folder, for
tests: started on free ports, stopped by the PIDs in its pid files."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
SEARCH = "/usr/sbin:/usr/bin:/sbin:/bin:" + os.environ.get("PATH", "")


def _bin(name: str) -> str:
    return shutil.which(name, path=SEARCH) or name


def available() -> bool:
    return all(shutil.which(d, path=SEARCH) for d in (*DAEMONS, "sbatch", "sinfo")) and os.geteuid() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path) -> dict[str, str]:
    """Start the cluster under root; return the environment clients need (SLURM_CONF)."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    host = socket.gethostname().split(".")[0]
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=nexatest",
                f"SlurmctldHost={host}",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "AuthType=auth/munge",
                f"AuthInfo=socket={root}/munge.socket",
                "CredType=cred/munge",
                f"StateSaveLocation={root}/state",
                f"SlurmdSpoolDir={root}/spool",
                f"SlurmctldPidFile={root}/slurmctld.pid",
                f"SlurmdPidFile={root}/slurmd.pid",
                f"SlurmctldLogFile={root}/slurmctld.log",
                f"SlurmdLogFile={root}/slurmd.log",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "SchedulerType=sched/builtin",
                "SelectType=select/cons_tres",
                "MpiDefault=none",
                "ReturnToService=2",
                f"NodeName={host} CPUs={os.cpu_count()} RealMemory=4000 State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(
        [
            _bin("munged"),
            f"--socket={root}/munge.socket",
            f"--key-file={key}",
            f"--pid-file={root}/munged.pid",
            f"--log-file={root}/munged.log",
            f"--seed-file={root}/munge.seed",
            "-f",
        ],
        check=True,
        env=env,
    )
    subprocess.run([_bin("slurmctld"), "-f", str(conf)], check=True, env=env)
    subprocess.run([_bin("slurmd"), "-f", str(conf)], check=True, env=env)
    deadline = time.time() + 60
    while (
        "idle" not in subprocess.run([_bin("sinfo"), "-h", "-o", "%t"], capture_output=True, text=True, env=env).stdout
    ):
        if time.time() > deadline:
            stop(root)
            raise RuntimeError(f"slurm did not come up; see {root}/slurmctld.log and slurmd.log")
        time.sleep(0.5)
    return {"SLURM_CONF": str(conf)}


def stop(root: Path) -> None:
    for daemon in ("slurmd", "slurmctld", "munged"):
        pid_file = root / f"{daemon}.pid"
        if not pid_file.is_file():
            continue
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
