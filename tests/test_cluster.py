"""The ``cluster`` tier: ``manifests/slurm_array.sbatch`` submitted to a real single-node SLURM
(tests/slurm.py), overridden on the command line the way a user would on a CPU partition.

Checked: every job done exactly once across the array; at least one USR1 -> checkpoint ->
requeue -> resume cycle; the outputs identical to an uninterrupted run; ``status`` and
``report`` right on the shared state directory; the shard numbering (0-based) in the task
logs; and a ``scancel`` that cancels for good (checkpointed, never requeued).

Needs root and Debian's slurmctld, slurmd, slurm-client and munge (``.ci/run`` installs them
and sets NSTBATCH_REQUIRE_SLURM=1, so in CI this fails instead of skipping).
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests import slurm
from tests.conftest import CSV_HEADER, ROOT, cli_process, draw_inputs, pixels, report_lines, spawn_run

SCRIPT = ROOT / "manifests" / "slurm_array.sbatch"

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = ("not root" if os.geteuid() != 0 else
           f"missing {', '.join(slurm.missing())}" if slurm.missing() else None)
    if why:
        if os.environ.get("NSTBATCH_REQUIRE_SLURM"):
            pytest.fail(f"a real SLURM is required here (NSTBATCH_REQUIRE_SLURM) but cannot start: {why}")
        pytest.skip(f"no single-node SLURM here: {why}")
    with slurm.single_node_slurm(tmp_path_factory.mktemp("slurm")) as env:
        # The job scripts find this venv's nstbatch, and the tests' cache and settings.
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        yield env


def sbatch(env, folder, *args, minutes: int = 1) -> str:
    out = subprocess.run(["sbatch", "--parsable", "--gres=none", "--cpus-per-task=1", f"--time={minutes}",
                          f"--output={folder}/task-%A_%a.log", *args, str(SCRIPT), "m.csv"],
                         env=env, cwd=folder, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def wait_until(predicate, timeout, what, env=None, job=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            states = slurm.job_states(env, job) if env and job else {}
            raise AssertionError(f"timed out waiting for {what} (jobs: {states})")
        time.sleep(1)


def test_an_array_checkpoints_requeues_resumes_and_finishes_every_job_once(cluster, tmp_path):
    env = cluster
    draw_inputs(tmp_path, 2, 48, 40, 40)
    # Two jobs that are still running when the time limit's warning (USR1) comes: the test sends
    # it, as SLURM's --signal=B:USR1 does, once it sees both under way; SLURM's own warning, due a
    # minute before a 10-minute limit, comes long after (its timers may send it up to a minute early).
    rows = "".join(f'j{i},c{i}.png,s.png,out/j{i}.png,64,3000,relu2_2,"relu1_1,relu2_1",{i}\n' for i in range(2))
    (tmp_path / "m.csv").write_text(CSV_HEADER + rows)
    whole = tmp_path / "whole"
    whole.mkdir()
    draw_inputs(whole, 2, 48, 40, 40)
    (whole / "m.csv").write_text(CSV_HEADER + rows)
    # The uninterrupted run, meanwhile, with the one core a task is allotted (the same thread
    # count, so the same arithmetic).
    reference = spawn_run(whole, "-q", env={"SLURM_CPUS_PER_TASK": "1"}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    env = {**env, "NSTBATCH_STATE_DIR": str(tmp_path / "state")}
    job = sbatch(env, tmp_path, "--array=0-1", "--signal=B:USR1@60", minutes=10)
    state = tmp_path / "state"
    # The time limit's warning, sent once both tasks are observed to be under way (each has
    # checkpointed, every 200 steps, with thousands to go), not left to SLURM's clock: on an idle
    # machine a task can finish before its warning comes.
    checkpoints = [state / "checkpoints" / f"j{i}.pt" for i in range(2)]
    wait_until(lambda: all(path.is_file() for path in checkpoints), 300, "both tasks to checkpoint", env, job)
    signalled = subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=env, capture_output=True, text=True)
    assert signalled.returncode == 0, signalled.stderr

    requeued: dict[str, float] = {}

    def finished():
        states, restarts = slurm.job_states(env, job), slurm.job_states(env, job, "Restarts")
        for task, name in states.items():
            if name == "PENDING" and restarts.get(task, "0") != "0":  # requeued
                requeued.setdefault(task, time.monotonic())
                # Skip most of SLURM's requeue delay, but not all of it: started within the same
                # second, the new allocation's credential counts as revoked with the old one's
                # ("Job credential revoked") and the task fails. And give the rest of the job a
                # longer allocation to finish in.
                if time.monotonic() - requeued[task] > 5:
                    subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now", "TimeLimit=10"],
                                   env=env, capture_output=True)
        return states and all(name == "COMPLETED" for name in states.values())

    wait_until(finished, 600, "the array to complete", env, job)
    assert reference.wait(timeout=600) == 0
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("task-*.log")))
    lines = report_lines(None, state=state)
    done = [line for line in lines if line["status"] == "done"]
    assert sorted(line["id"] for line in done) == ["j0", "j1"], logs  # each exactly once
    assert any(line["status"] == "preempted" for line in lines), logs  # USR1 -> checkpoint
    assert "requeueing" in logs and any(line.get("resumed_from_step", 0) > 0 for line in done), logs
    for i in range(2):  # a resumed job ends as the uninterrupted one
        assert np.array_equal(pixels(tmp_path / "out" / f"j{i}.png"), pixels(whole / "out" / f"j{i}.png"))
    assert re.search(r"shard 0/2 \(SLURM\)", logs) and re.search(r"shard 1/2 \(SLURM\)", logs), logs
    status = cli_process("status", "m.csv", "--state-dir", state, cwd=tmp_path)
    assert status.returncode == 0 and "done 2, failed 0, invalid 0, pending 0" in status.stdout, status
    report = cli_process("report", "m.csv", "--state-dir", state, "-o", tmp_path / "r.html", cwd=tmp_path)
    assert report.returncode == 0 and "2 job(s); done 2, failed 0, invalid 0, pending 0" in report.stdout, report


def test_scancel_cancels_for_good(cluster, tmp_path):
    env = {**cluster, "NSTBATCH_STATE_DIR": str(tmp_path / "state")}
    draw_inputs(tmp_path, 1, 48, 40, 40)
    (tmp_path / "m.csv").write_text(CSV_HEADER + 'j0,c0.png,s.png,out/j0.png,64,100000,relu2_2,"relu1_1,relu2_1",0\n')
    job = sbatch(env, tmp_path, "--array=0", "--time=10")
    started = tmp_path / "state" / "report.jsonl"
    # started: its worker has its stop handlers, so a TERM from here on checkpoints
    wait_until(lambda: started.exists() and "started" in started.read_text(), 120, "the job to start", env, job)
    subprocess.run(["scancel", job], env=env, check=True)
    wait_until(lambda: set(slurm.job_states(env, job).values()) == {"CANCELLED"}, 120, "the cancel", env, job)

    def logs() -> str:
        return "".join(p.read_text() for p in tmp_path.glob("task-*.log"))

    # the script's last word: it has decided, past the line where it would have requeued
    wait_until(lambda: "not requeued" in logs(), 120, "the script to end", env, job)
    assert set(slurm.job_states(env, job).values()) == {"CANCELLED"}
    logs = logs()
    assert "requeueing" not in logs and "exit 75" in logs, logs
    assert list((tmp_path / "state" / "checkpoints").glob("*.pt")), logs  # TERM: checkpointed all the same
