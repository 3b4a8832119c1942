"""A real single-node SLURM for the ``cluster`` test tier: munged, slurmctld and slurmd from
Debian's packages (``.ci/run`` installs them where missing), configured in a temp folder,
started in the background and stopped at the end whatever happens.

What was found to work on this kind of machine (a container, root, no systemd): the munge
key the package made (or a new one), munged run as the ``munge`` user;
``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``, ``SlurmUser=root``,
``JobRequeue=1``, the node line ``slurmd -C`` prints; a ``cgroup.conf`` with
``CgroupPlugin=cgroup/v1`` and ``IgnoreSystemd=yes`` (22.05 has no ``disabled``).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "munged")


def missing() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _munge() -> subprocess.Popen | None:
    """munged, unless one answers already; None when it was running before us."""
    if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
    subprocess.run(["chown", "-R", "munge:munge", "/etc/munge"], check=True)
    key.chmod(0o400)
    for folder in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "munge:munge", folder], check=True)
    process = subprocess.Popen(["runuser", "-u", "munge", "--", "munged", "-F", "--force"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("munged did not start")
        time.sleep(0.2)
    return process


def _config(folder: Path) -> Path:
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    host = node.split()[0].split("=", 1)[1]
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
ClusterName=nstbatch-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
ReturnToService=2
MinJobAge=600
KillWait=10
InactiveLimit=0
MpiDefault=none
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
{node} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    (folder / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n")
    return conf


@contextmanager
def single_node_slurm(folder: Path) -> Iterator[dict[str, str]]:
    """Start munged (if needed), slurmctld and slurmd; yield the environment that points the
    client commands at them (SLURM_CONF); stop the daemons on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    munge = _munge()
    conf = _config(folder)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = []
    try:
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                            stderr=open(folder / f"{daemon}.stderr", "wb")))
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout.strip()
            if state.startswith("idle"):
                break
            if time.monotonic() > deadline or any(d.poll() is not None for d in daemons):
                logs = "".join((folder / name).read_text(errors="replace")[-2000:] for name in
                               ("slurmctld.log", "slurmd.log", "slurmctld.stderr", "slurmd.stderr")
                               if (folder / name).exists())
                raise RuntimeError(f"SLURM did not come up (sinfo: {state!r}):\n{logs}")
            time.sleep(0.5)
        yield env
    finally:
        # Jobs first (their steps outlive slurmd otherwise), then the daemons.
        subprocess.run(["scancel", "--full", "--quiet", "--user", "root"], env=env, capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and subprocess.run(
                ["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip():
            time.sleep(0.5)
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        _kill_leftovers(folder, conf)
        if munge is not None:
            munge.terminate()
            munge.wait(timeout=10)


def _kill_leftovers(folder: Path, conf: Path) -> None:
    """Whatever is still left of the jobs: step daemons, scripts run from our spool folder, and
    their children, which inherit our SLURM_CONF (an interrupted teardown must not leave runs
    of nstbatch going on alone)."""
    subprocess.run(["pkill", "-KILL", "-f", f"slurmstepd|{folder}/spool"], capture_output=True)
    mark = f"SLURM_CONF={conf}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        if int(proc.name) == os.getpid():
            continue
        try:
            if mark in (proc / "environ").read_bytes().split(b"\0") and b"SLURM_JOB_ID=" in (proc / "environ").read_bytes():
                os.kill(int(proc.name), 9)
        except (OSError, ValueError):
            pass


def job_states(env: dict[str, str], job: str, field: str = "JobState") -> dict[str, str]:
    """{'<array>_<task>': state} of an array job (or another ``field``, e.g. Restarts), from
    scontrol (no accounting needed)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True).stdout
    states = {}
    for line in out.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if "ArrayTaskId" in fields:
            states[f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"] = fields.get(field, "?")
    return states
