"""Shards that finish together: a shard done with its own jobs takes the other shards' pending
ones through the claims (each job still runs once), takes over a killed shard's job, and
progress lines number jobs once each."""
import json
import re

import pytest

from nstbatch.cli import main
from nstbatch.jobs.shards import shard_of
from tests.conftest import CSV_HEADER, kill_run, report_lines, spawn_run, wait_for

IDS = [f"j{i}" for i in range(12)]


def manifest(folder, steps, long_first=0, shard_steps=None):
    """The 12 jobs; with ``long_first``, shard 1's first job gets that many steps instead; with
    ``shard_steps`` ({shard: steps}), those shards' own jobs get theirs."""
    first = next(job for job in IDS if shard_of(job, 3) == 1)

    def steps_of(job):
        if job == first and long_first:
            return long_first
        return (shard_steps or {}).get(shard_of(job, 3), steps)

    (folder / "m.csv").write_text(CSV_HEADER + "".join(
        f'{job},c{i % 4}.png,s.png,out/{job}.png,32,{steps_of(job)},'
        f'relu2_2,"relu1_1,relu2_1",{i}\n' for i, job in enumerate(IDS)))


def done_lines(folder):
    return [line for line in report_lines(folder) if line["status"] == "done"]


def test_the_hash_split_of_the_test_manifest_is_uneven():
    # What the helping tests rely on: shard 2 of 3 owns one job, the others five and six.
    assert [sum(shard_of(i, 3) == k for i in IDS) for k in range(3)] == [5, 6, 1]


@pytest.mark.slow
def test_three_shards_finish_every_job_once_and_together(folder):
    # Shard 2 owns one short job. It starts alone, and once it has started a job of another
    # shard (an observed state: it is helping) the other two start: every job still runs
    # exactly once, and the helped ones say whose they were.
    manifest(folder, steps=150, shard_steps={2: 10})
    own = {job for job in IDS if shard_of(job, 3) == 2}
    helper = spawn_run(folder, "--shard", "2/3", "-q")
    wait_for(lambda: any(line["status"] == "started" and line["id"] not in own for line in report_lines(folder)),
             helper)
    procs = [spawn_run(folder, "--shard", f"{i}/3", "-q") for i in range(2)] + [helper]
    for proc in procs:
        proc.wait(timeout=900)
    assert [proc.returncode for proc in procs] == [0, 0, 0], [proc.communicate() for proc in procs]
    done = done_lines(folder)
    assert sorted(line["id"] for line in done) == sorted(IDS)  # every job, each exactly once
    assert all((folder / "out" / f"{job}.png").is_file() for job in IDS)
    summaries = [json.loads((folder / ".nstbatch" / "m.csv" / f"summary-s{i}of3.json").read_text())
                 for i in range(3)]
    assert sum(s["done"] for s in summaries) == 12  # the per-shard summaries add up
    assert summaries[2]["helped"] >= 1  # the shard with one job of its own helped
    helped = [line for line in done if line.get("owner_shard")]
    assert helped and all(line["owner_shard"] != line["shard"] for line in helped)
    assert main(["status", str(folder / "m.csv")]) == 0
    assert main(["report", str(folder / "m.csv"), "-o", str(folder / "r.html")]) == 0
    assert "helping shard" in (folder / "r.html").read_text()  # who ran each job


@pytest.mark.slow
def test_no_steal_keeps_the_strict_split(folder):
    manifest(folder, steps=2)
    assert main(["run", str(folder / "m.csv"), "--shard", "2/3", "--no-steal", "-q"]) == 0
    assert [line["id"] for line in done_lines(folder)] == [i for i in IDS if shard_of(i, 3) == 2]


@pytest.mark.slow
def test_a_killed_shards_job_is_taken_over_from_its_checkpoint(folder, capsys):
    manifest(folder, steps=10, long_first=400)
    victim = spawn_run(folder, "--shard", "1/3", "--claim-stale", "5", "-v")
    claims = folder / ".nstbatch" / "m.csv" / "claims"

    def under_way():  # -v prints step lines: wait until the long job has taken some steps
        found = re.search(r"step (\d+)/400", victim.stderr.readline().decode())
        return found is not None and int(found.group(1)) >= 20

    wait_for(under_way, victim)
    held = [path.name.split(".")[0] for path in claims.glob("*.lock")]
    kill_run(folder, victim)  # its orphaned worker checkpoints and lets go of the claim
    others = [spawn_run(folder, "--shard", f"{i}/3", "--claim-stale", "5", "-q") for i in (0, 2)]
    for proc in others:
        assert proc.wait(timeout=600) == 0, proc.communicate()
    done = done_lines(folder)
    assert sorted(line["id"] for line in done) == sorted(IDS)  # all 12, each once
    taken = [line for line in done if line["id"] in held]
    assert taken and all(line["owner_shard"] == "s1of3" for line in taken)
    assert all(line.get("resumed_from_step", 0) > 0 for line in taken)  # from its checkpoint
    assert main(["status", str(folder / "m.csv")]) == 0
    assert re.search(r"shard 1/3: 6 job\(s\), done 6 \(\d by itself, [1-6] by helping shards\)",
                     capsys.readouterr().out)


@pytest.mark.slow
def test_progress_lines_count_one_to_n_once_each_with_two_workers(folder, capsys):
    manifest(folder, steps=3)
    assert main(["run", str(folder / "m.csv"), "--workers", "2"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if re.match(r"\[\d+/\d+\] done", line)]
    numbers = [int(re.match(r"\[(\d+)/(\d+)\]", line).group(1)) for line in lines]
    assert numbers == list(range(1, 13))  # in the order they finish, once each
    assert {re.match(r"\[\d+/(\d+)\]", line).group(1) for line in lines} == {"12"}


def test_force_does_not_redo_a_job_another_run_finished_after_planning(folder):
    from nstbatch.jobs.executor import JobExecutor
    from nstbatch.jobs.ledger import LineStatus, StateDir
    from nstbatch.jobs.options import RunOptions
    from nstbatch.jobs.plan import plan_run

    manifest(folder, steps=2)
    options = RunOptions(folder / "m.csv", force=True, targets="torch", isolate=False)
    state = StateDir(folder / ".nstbatch" / "m.csv")
    forced = plan_run(options.manifest, state, force=True).jobs[0]
    assert main(["run", str(folder / "m.csv"), "--in-process", "--targets", "torch", "-q"]) == 0  # "a helper"
    outcome = JobExecutor(options, state.root, "cpu").run([forced])[0]
    assert outcome.status == LineStatus.ELSEWHERE and "finished by another run" in outcome.error
    again = plan_run(options.manifest, state, force=True).jobs[0]  # planned after: --force reruns it
    assert JobExecutor(options, state.root, "cpu").run([again])[0].status == LineStatus.DONE


@pytest.mark.parametrize("where", [pytest.param(["--in-process"], id="in-process"),
                                   pytest.param([], id="workers", marks=pytest.mark.slow)])
def test_a_job_another_run_holds_is_no_attempt_of_this_run(folder, where):
    from nstbatch.jobs.claims import claim_at
    from nstbatch.jobs.ledger import StateDir
    from nstbatch.jobs.plan import plan_run

    manifest(folder, steps=2)
    state = StateDir(folder / ".nstbatch" / "m.csv")
    held = plan_run(folder / "m.csv", state).jobs[0].job
    claim = claim_at(state.claim_path(held.id))  # another run (this live process) holds it
    try:
        main(["run", str(folder / "m.csv"), "--targets", "torch", "--no-steal", "-q", *where])
    finally:
        claim.release()
    lines = report_lines(folder)
    assert {line["id"] for line in lines if line["status"] == "started"} == set(IDS) - {held.id}
    assert held.id not in {line["id"] for line in lines}  # no start, no outcome: the holder answers


def test_the_latest_lines_follow_the_reports_as_they_grow_in_time_order_across_shards(tmp_path):
    from nstbatch.jobs.ledger import LineStatus, LogLine, StateDir

    state, other = StateDir(tmp_path, "s0of2"), StateDir(tmp_path, "s1of2")
    state.log.append(LogLine("a", LineStatus.FAILED, time=100.0))
    other.log.append(LogLine("b", LineStatus.DONE, time=101.0))
    other.log.append(LogLine("a", LineStatus.DONE, time=99.0))  # earlier, in the other shard's file
    assert {k: str(v.status) for k, v in state.log.latest().items()} == {"a": "failed", "b": "done"}
    with open(other.log.path, "ab") as f:
        f.write(b'{"id": "b", "status": "fai')  # being written
    assert str(state.log.latest()["b"].status) == "done"
    with open(other.log.path, "ab") as f:
        f.write(b'led", "time": 102.0}\n')
    state.log.append(LogLine("a", LineStatus.STARTED, time=103.0))  # retried since: no longer failed
    assert {k: str(v.status) for k, v in state.log.latest().items()} == {"a": "started", "b": "failed"}
    fresh = StateDir(tmp_path).log.latest()  # a fresh reader, from the start, agrees
    assert {k: str(v.status) for k, v in fresh.items()} == {"a": "started", "b": "failed"}
