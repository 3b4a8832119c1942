"""Scale-out: several workers, shards, preemption with checkpoints, overlapping runs."""
import json
import re
import os
import signal
import time

import numpy as np
import pytest
import torch

from nstbatch.cli import main
from nstbatch.jobs.ledger import EXIT_PREEMPTED
from tests.conftest import CSV_HEADER, kill_run, pixels, report_lines, spawn_run, wait_for


def manifest(folder, jobs, steps=4, size=32, out="out"):
    path = folder / "m.csv"
    path.write_text(CSV_HEADER + "".join(
        f'j{i},c{i % 4}.png,s.png,{out}/j{i}.png,{size},{steps},relu2_2,"relu1_1,relu2_1",{i}\n'
        for i in range(jobs)))
    return path


@pytest.mark.slow
def test_two_cpu_workers_do_each_job_once_and_match_one_worker(folder, capsys):
    m = manifest(folder, 8)
    assert main(["run", str(m), "--workers", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "done 8, already done 0, failed 0" in out
    done = [l["id"] for l in report_lines(folder, started=False) if l["status"] == "done"]
    assert sorted(done) == [f"j{i}" for i in range(8)]  # each exactly once
    two = {i: pixels(folder / "out" / f"j{i}.png") for i in range(8)}
    m = manifest(folder, 8, out="out1")
    assert main(["run", str(m), "--workers", "1", "-q"]) == 0
    for i in range(8):
        assert np.abs(pixels(folder / "out1" / f"j{i}.png") - two[i]).max() <= 1


@pytest.mark.slow
def test_sigterm_mid_job_checkpoints_exits_75_and_resumes_to_the_same_image(folder, capsys):
    m = manifest(folder, 1, steps=300, size=96)
    proc = spawn_run(folder, "-v")
    # -v prints step lines: wait until the job is well under way
    lines = []

    def in_the_middle():  # step lines come at most twice a second from a worker
        line = proc.stderr.readline().decode()
        lines.append(line)
        found = re.search(r"step (\d+)/300", line)
        return found is not None and int(found.group(1)) >= 30

    wait_for(in_the_middle, proc)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED == 75
    assert time.monotonic() - signalled < 10
    assert b"checkpointed" in err and b"Traceback" not in err
    checkpoints = list((folder / ".nstbatch" / "m.csv" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 1 and not (folder / "out" / "j0.png").exists()
    (line,) = [l for l in report_lines(folder, started=False) if l["status"] == "preempted"]
    assert line["id"] == "j0"

    assert main(["run", "--in-process", str(m), "-q"]) == 0
    capsys.readouterr()
    resumed = [l for l in report_lines(folder, started=False) if l["status"] == "done"]
    assert resumed[0]["resumed_from_step"] >= 30 and not list(checkpoints[0].parent.glob("*.pt"))
    manifest(folder, 1, steps=300, size=96, out="whole")
    assert main(["run", "--in-process", str(m), "-q", "--state-dir", str(folder / "other-state")]) == 0
    assert np.abs(pixels(folder / "out" / "j0.png") - pixels(folder / "whole" / "j0.png")).max() <= 1


@pytest.mark.slow
def test_checkpoint_every_survives_a_hard_kill(folder, capsys):
    m = manifest(folder, 1, steps=600, size=48)  # long enough not to finish between the checkpoint and the kill
    proc = spawn_run(folder, "--checkpoint-every", "10", "-q")
    checkpoint_dir = folder / ".nstbatch" / "m.csv" / "checkpoints"
    wait_for(lambda: any(checkpoint_dir.glob("*.pt")), proc)  # written every 10 steps
    kill_run(folder, proc)
    assert main(["run", "--in-process", str(m), "-q"]) == 0
    (line,) = [l for l in report_lines(folder, started=False) if l["status"] == "done"]
    assert line["resumed_from_step"] >= 10, line


@pytest.mark.slow
def test_two_runs_started_together_do_each_job_exactly_once(folder):
    manifest(folder, 10, steps=15, size=40)
    first, second = spawn_run(folder, "-q"), spawn_run(folder, "-q")
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    done = [l["id"] for l in report_lines(folder, started=False) if l["status"] == "done"]
    assert sorted(done) == sorted(f"j{i}" for i in range(10))
    for i in range(10):
        pixels(folder / "out" / f"j{i}.png")  # decodes
    assert not list((folder / ".nstbatch" / "m.csv" / "claims").glob("*"))


def test_shards_split_a_run_and_status_adds_them_up(folder, capsys):
    m = manifest(folder, 6)
    for index in range(3):
        assert main(["run", "--in-process", str(m), "--shard", f"{index}/3", "--no-steal", "-q"]) == 0
    capsys.readouterr()
    state = folder / ".nstbatch" / "m.csv"
    assert sorted(p.name for p in state.glob("report*.jsonl")) == [f"report-s{i}of3.jsonl" for i in range(3)]
    assert sorted(l["id"] for l in report_lines(folder, started=False)) == [f"j{i}" for i in range(6)]
    assert main(["status", str(m)]) == 0
    assert "done 6, failed 0, invalid 0, pending 0" in capsys.readouterr().out
    assert main(["plan", str(m), "--shards", "3"]) == 0
    out = capsys.readouterr().out
    assert "total        6" in out


def test_a_shard_done_with_its_own_jobs_helps_and_one_with_nothing_left_exits_0(folder, capsys):
    m = manifest(folder, 6)
    assert main(["run", "--in-process", str(m), "--shard", "0/3", "-q"]) == 0
    assert "done 6" in capsys.readouterr().out  # its own share, then the others' pending jobs
    for index in (1, 2):
        assert main(["run", "--in-process", str(m), "--shard", f"{index}/3", "-q"]) == 0
        assert "done 0, already done" in capsys.readouterr().out
    assert sorted(l["id"] for l in report_lines(folder, started=False)) == [f"j{i}" for i in range(6)]
    assert main(["status", str(m)]) == 0
    out = capsys.readouterr().out
    assert "done 6, failed 0, invalid 0, pending 0" in out and "shard 1/3:" in out and "by helping shards" in out


def test_shard_auto_reads_the_scheduler(folder, capsys, monkeypatch):
    m = manifest(folder, 6)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert main(["run", "--in-process", str(m), "--shard", "auto", "--dry-run"]) == 0
    out = capsys.readouterr().out
    from nstbatch.jobs.shards import shard_of
    mine = [f"j{i}" for i in range(6) if shard_of(f"j{i}", 2) == 1]
    assert f"{len(mine)} to run" in out and all(j in out for j in mine)


def _worker_pids(parent: int) -> list[int]:
    pids = []
    for task in os.listdir(f"/proc/{parent}/task"):
        try:
            children = open(f"/proc/{parent}/task/{task}/children").read().split()
        except FileNotFoundError:
            continue
        for pid in children:
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except FileNotFoundError:
                continue
            if b"spawn_main" in cmdline:
                pids.append(int(pid))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_a_worker_that_dies_fails_its_job_alone_and_is_replaced(folder):
    manifest(folder, 4, steps=300, size=40)  # long jobs: the kill lands inside one
    proc = spawn_run(folder, "--workers", "2", "-v")

    def working():
        line = proc.stderr.readline().decode()
        return " step " in line

    wait_for(working, proc)
    victim = _worker_pids(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    failed = [l for l in report_lines(folder, started=False) if l["status"] == "failed"]
    assert len(failed) == 1 and "killed by SIGKILL" in failed[0]["error"]
    assert b"starting a new one" in err
    done = [l["id"] for l in report_lines(folder, started=False) if l["status"] == "done"]
    assert len(done) == 3 and failed[0]["id"] not in done


def test_batched_jobs_equal_their_one_by_one_results(folder, capsys):
    m = manifest(folder, 8, steps=6, size=32)
    rows = m.read_text().splitlines()  # one seed for all, so that they share parameters
    m.write_text("\n".join([rows[0]] + [r.rsplit(",", 1)[0] + ",0" for r in rows[1:]]) + "\n")
    assert main(["run", "--in-process", str(m), "--batch", "4", "-q"]) == 0
    capsys.readouterr()
    done = [l for l in report_lines(folder, started=False) if l["status"] == "done"]
    assert sorted(l["id"] for l in done) == [f"j{i}" for i in range(8)]
    batched = {i: pixels(folder / "out" / f"j{i}.png") for i in range(8)}
    records = [json.loads((folder / ".nstbatch" / "m.csv" / "done" / f"j{i}.json").read_text()) for i in range(8)]
    assert {r.get("batch") for r in records} == {4}
    assert main(["run", "--in-process", str(m), "--batch", "1", "-q", "--force", "--state-dir", str(folder / "s1")]) == 0
    for i in range(8):
        assert np.abs(pixels(folder / "out" / f"j{i}.png") - batched[i]).max() <= 1


def test_batches_group_only_what_can_share_a_pass(folder):
    from nstbatch.jobs.ledger import JobState, Standing, StateDir
    from nstbatch.jobs.plan import Planned, batches
    from nstbatch.io.manifest import read_manifest

    m = folder / "m.csv"
    m.write_text("id,content,style,output,size,steps,optimizer\n"
                 "a,c0.png,s.png,o/a.png,32,3,adam\nb,c1.png,s.png,o/b.png,32,3,adam\n"
                 "c,c2.png,s.png,o/c.png,32,4,adam\nd,c3.png,s.png,o/d.png,32,3,lbfgs\n"
                 "e,c3.png,s.png,o/e.png,32,3,adam\n")
    items = [Planned(job, Standing(JobState.PENDING, "new", "h")) for job in read_manifest(m).jobs]
    tasks = batches(items, 4, StateDir(folder / "state"))
    assert [[i.job.id for i in task] for task in tasks] == [["a", "b", "e"], ["c"], ["d"]]
    assert [[i.job.id for i in task] for task in batches(items[:2] + items[4:], 2, StateDir(folder / "state"))] \
        == [["a", "b"], ["e"]]  # a full batch starts the next one


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_workers_of_a_killed_run_exit_instead_of_lingering(folder):
    manifest(folder, 4, steps=300, size=40)
    proc = spawn_run(folder, "--workers", "2", "-v")
    wait_for(lambda: " step " in proc.stderr.readline().decode(), proc)
    pids = _worker_pids(proc.pid)
    assert len(pids) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while any(os.path.exists(f"/proc/{pid}") and b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()
              for pid in pids):
        assert time.monotonic() < deadline, "worker processes outlived their run"
        time.sleep(0.2)


def test_a_batch_out_of_memory_is_retried_one_job_at_a_time(folder, capsys, monkeypatch):
    import nstbatch.jobs.executor as executor

    real = executor.optimize_job

    def no_room(content, *args, **kwargs):  # what a GPU says when a batch does not fit
        if content.shape[0] > 1:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {content.shape[0]}")
        return real(content, *args, **kwargs)

    monkeypatch.setattr(executor, "optimize_job", no_room)
    m = manifest(folder, 4, steps=3, size=32)
    m.write_text("\n".join([m.read_text().splitlines()[0]] +
                           [r.rsplit(",", 1)[0] + ",0" for r in m.read_text().splitlines()[1:]]) + "\n")
    assert main(["run", str(m), "--batch", "4", "-q", "--in-process"]) == 0
    assert "done 4" in capsys.readouterr().out
    records = [json.loads((folder / ".nstbatch" / "m.csv" / "done" / f"j{i}.json").read_text()) for i in range(4)]
    assert all(r["batch"] == 1 for r in records)  # each ran alone after the batch failed


def _signal_self():
    os.kill(os.getpid(), signal.SIGUSR1)  # a stop signal before the first job starts


def test_a_stop_signal_before_any_job_started_still_asks_for_a_requeue(folder):
    from nstbatch.jobs.options import RunOptions
    from nstbatch.jobs.run import run_manifest

    m = manifest(folder, 3)
    summary, _ = run_manifest(RunOptions(m, isolate=False, targets="torch", worker_setup=_signal_self))
    assert summary.done == 0 and summary.left == 3
    assert summary.exit_code == EXIT_PREEMPTED  # the job script requeues: none of them is lost
