"""Where a job stands: the ledger alone decides, and a dead run's claim is no 'running'."""
import os
import signal
import socket
import subprocess
import time

import pytest

from nstbatch.config import resolve_params
from nstbatch.jobs.ledger import DoneRecord, JobState, LineStatus, LogLine, StateDir, default_state_dir
from nstbatch.jobs.views import status
from nstbatch.io.manifest import read_manifest
from tests.conftest import cli_process, draw_inputs, run_cli, spawn_run, wait_for, wait_until_gone


@pytest.fixture
def two_jobs(tmp_path):
    draw_inputs(tmp_path, 2, 24, 20, 24)
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,content,style,output,size,steps\n"
                        "a,c0.png,s.png,out/a.png,24,2\nb,c1.png,s.png,out/b.png,24,2\n")
    return manifest


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _started_with_claim(manifest, job_id: str, holder: str, age: float = 0.0) -> StateDir:
    """The state a run leaves when it dies mid-job: a 'started' line and its claim file."""
    state = StateDir(default_state_dir(manifest))
    state.log.start(next(job for job in read_manifest(manifest).jobs if job.id == job_id))
    claim = state.claim_path(job_id)
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(f"{holder} {time.time():.0f}\n")
    if age:
        os.utime(claim, (time.time() - age, time.time() - age))
    return state


def _statuses(manifest, **kw) -> dict[str, JobState]:
    return {v.job.id: v.status for v in status(manifest, check_files=False, histories=False, **kw).jobs}


def test_a_claim_of_a_dead_process_on_this_host_is_an_interrupted_job_not_a_running_one(two_jobs):
    _started_with_claim(two_jobs, "a", f"{socket.gethostname()}:{_dead_pid()}")
    assert _statuses(two_jobs) == {"a": JobState.INTERRUPTED, "b": JobState.PENDING}


def test_a_claim_of_a_living_process_on_this_host_is_running(two_jobs):
    _started_with_claim(two_jobs, "a", f"{socket.gethostname()}:{os.getpid()}")
    assert _statuses(two_jobs)["a"] == JobState.RUNNING


def test_a_claim_from_another_host_runs_until_its_heartbeat_is_stale(two_jobs):
    _started_with_claim(two_jobs, "a", "node-elsewhere.cluster:4242", age=100)
    assert _statuses(two_jobs)["a"] == JobState.RUNNING
    assert _statuses(two_jobs, claim_stale=60)["a"] == JobState.INTERRUPTED
    os.utime(StateDir(default_state_dir(two_jobs)).claim_path("a"), (time.time() - 400,) * 2)
    assert _statuses(two_jobs)["a"] == JobState.INTERRUPTED  # the default: 300 s


def test_standing_orders_done_failure_and_a_checkpoint(two_jobs, capsys):
    assert run_cli(capsys, "run", two_jobs, "-q", "--targets", "torch")[0] == 0
    state = StateDir(default_state_dir(two_jobs))
    a, b = read_manifest(two_jobs).jobs
    hasher = state.job_hasher()
    done = state.standing(a, hasher)
    assert done.status == JobState.DONE and isinstance(done.done, DoneRecord)
    assert done.done.output == str((two_jobs.parent / "out/a.png").resolve())
    (two_jobs.parent / "out/b.png").unlink()
    assert (state.standing(b, hasher).status, state.standing(b, hasher).why) == (JobState.PENDING, "output missing")
    state.log.append(LogLine("b", LineStatus.FAILED, error="disk full"))
    assert (state.standing(b, hasher).status, state.standing(b, hasher).why) == (JobState.FAILED, "disk full")
    assert "run   (retry: it failed last time) b" in run_cli(capsys, "run", two_jobs, "--dry-run")[1]
    state.log.append(LogLine("b", LineStatus.STARTED))  # retried, and the retry was cut short
    assert state.standing(b, hasher).status == JobState.INTERRUPTED
    state.checkpoint_path("b").parent.mkdir(parents=True, exist_ok=True)
    state.checkpoint_path("b").write_bytes(b"")
    assert state.standing(b, hasher).why == "resumes from its checkpoint"
    code, out, _ = run_cli(capsys, "run", two_jobs, "--dry-run")
    assert code == 0 and "run   (resumes from its checkpoint)" in out and "skip  (done)" in out


def test_report_lines_and_done_records_read_back_as_written(tmp_path):
    state = StateDir(tmp_path, "s1of2")
    state.log.append(LogLine("x", LineStatus.DONE, "m.csv:2", "s1of2", output="/o.png", seconds=1.5,
                                   costs={"total": 2.0}, owner_shard="s0of2"))
    (line,) = state.log.lines()
    assert (line.id, line.status, line.seconds, line.costs, line.owner_shard) == \
        ("x", LineStatus.DONE, 1.5, {"total": 2.0}, "s0of2")
    assert line.time > 0 and line.error is None
    with open(state.log.path, "ab") as f:
        f.write(b'{"id": "y", "status": "a status from the future", "time": 1}\n{"torn')
    assert [line.id for line in state.log.lines()] == ["x"]


@pytest.mark.slow
def test_kill_9_of_the_whole_run_then_status_says_interrupted_at_once(two_jobs):
    """A run of two jobs, SIGKILL to the parent and its workers mid-job: status must not
    call the dead run's job running."""
    two_jobs.write_text(two_jobs.read_text().replace(",2\n", ",400\n"))
    proc = spawn_run(two_jobs.parent, "--targets", "torch", start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = StateDir(default_state_dir(two_jobs))
    try:
        wait_for(lambda: any(state.root.glob("claims/*.lock")) and any(
            line.status == LineStatus.STARTED for line in state.log.lines()), proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    wait_until_gone(proc.pid)  # the workers' deaths reach the kernel's process table
    assert list(state.root.glob("claims/*.lock")), "the kill left its claim behind, as a real one does"
    statuses = _statuses(two_jobs)
    assert JobState.RUNNING not in statuses.values()
    assert JobState.INTERRUPTED in statuses.values()
    out = cli_process("status", "m.csv", cwd=two_jobs.parent).stdout
    assert "interrupted" in out and "running" not in out


def test_job_files_are_named_after_the_id_made_safe_the_same_way_as_before(tmp_path):
    state = StateDir(tmp_path)
    assert state.done_path("j-1_a.b").name == "j-1_a.b.json"
    assert state.claim_path("cats/a b:é?").name == "cats_a_b_é_.lock"  # alphanumerics kept, é too


def test_the_transition_table_refuses_an_outcome_without_a_start_and_a_second_outcome(tmp_path):
    from nstbatch.io.manifest import Job
    from nstbatch.jobs.ledger import TRANSITIONS, Outcome, allowed

    assert allowed(None, LineStatus.STARTED) and allowed(LineStatus.STARTED, LineStatus.DONE)
    assert not allowed(None, LineStatus.DONE) and not allowed(LineStatus.DONE, LineStatus.FAILED)
    assert not allowed(LineStatus.STARTED, LineStatus.STARTED) and allowed(LineStatus.FAILED, LineStatus.STARTED)
    assert set(TRANSITIONS) >= {None, LineStatus.STARTED, LineStatus.DONE}
    state = StateDir(tmp_path)
    job = Job("x", tmp_path / "c.png", ((tmp_path / "s.png", 1.0),), tmp_path / "o.png", resolve_params(), "m.csv:2")
    with pytest.raises(RuntimeError, match="a done line after none"):
        state.log.record(Outcome(job, LineStatus.DONE))
    state.log.start(job)
    state.log.record(Outcome(job, LineStatus.DONE))
    with pytest.raises(RuntimeError, match="a failed line after done"):
        state.log.record(Outcome(job, LineStatus.FAILED))
    assert [line.status for line in state.log.lines()] == [LineStatus.STARTED, LineStatus.DONE]


def test_the_transitions_are_checked_against_the_log_whichever_process_wrote_it(tmp_path):
    """A fresh ``RunLog`` (another run, another shard) reads the job's last line from the log:
    a second outcome is refused whoever wrote the first; a start another process never answered
    was cut short, so a new attempt may start."""
    from nstbatch.io.manifest import Job
    from nstbatch.jobs.ledger import Outcome
    from nstbatch.jobs.runlog import RunLog

    job = Job("x", tmp_path / "c.png", ((tmp_path / "s.png", 1.0),), tmp_path / "o.png", resolve_params(), "m.csv:2")
    first = RunLog(tmp_path)
    first.start(job)
    first.record(Outcome(job, LineStatus.DONE))
    with pytest.raises(RuntimeError, match="a done line after done"):
        RunLog(tmp_path, "s1of2").record(Outcome(job, LineStatus.DONE))  # another shard's file, the same job
    killed = RunLog(tmp_path)
    killed.start(job)  # ...and its process dies here
    again = RunLog(tmp_path, "s1of2")
    again.start(job)
    again.record(Outcome(job, LineStatus.FAILED))
    assert [line.status for line in again.lines()] == [LineStatus.STARTED, LineStatus.FAILED,  # the shard's file
                                                      LineStatus.STARTED, LineStatus.DONE, LineStatus.STARTED]


def test_where_a_job_stands_is_one_ordered_table_that_status_asks_with_validation_too(two_jobs, capsys):
    from nstbatch.jobs.ledger import STANDING_RULES

    assert [state for state, _ in STANDING_RULES] == [
        JobState.DONE, JobState.INVALID, JobState.QUARANTINED, JobState.RUNNING, JobState.FAILED, JobState.INVALID,
        JobState.INTERRUPTED, JobState.PENDING]
    state = StateDir(default_state_dir(two_jobs))
    a, b = read_manifest(two_jobs).jobs
    assert state.standing(b, state.job_hasher(), invalid={"b": "style: cannot be decoded"}).why == \
        "style: cannot be decoded"
    _started_with_claim(two_jobs, "b", f"{socket.gethostname()}:{os.getpid()}")  # held, but its files are broken
    assert state.standing(b, state.job_hasher(), invalid={"b": "broken"}).status == JobState.INVALID
    assert state.standing(b, state.job_hasher()).status == JobState.RUNNING


def test_every_line_of_a_run_follows_the_transition_table(two_jobs, capsys):
    """A run with an invalid row, a rerun, and a --force rerun: each job's lines, read back in
    order across the three runs, are transitions the table allows."""
    from nstbatch.jobs.ledger import allowed

    rows = two_jobs.read_text() + "bad,nothing.png,s.png,out/bad.png,24,2\n"
    two_jobs.write_text(rows)
    for args in ([], [], ["--force"]):
        run_cli(capsys, "run", two_jobs, "--skip-invalid", "--targets", "torch", "-q", *args)
    by_job = {}
    for line in StateDir(default_state_dir(two_jobs)).log.lines():
        by_job.setdefault(line.id, []).append(line.status)
    assert set(by_job) == {"a", "b", "bad"} and by_job["bad"] == [LineStatus.INVALID] * 3
    for job_id, statuses in by_job.items():
        previous = None
        for now in statuses:
            assert allowed(previous, now), (job_id, statuses)
            previous = now
    assert by_job["a"] == [LineStatus.STARTED, LineStatus.DONE] * 2  # run, already done, --force


# Which process each module's writes happen in (``ledger``'s table: job or parent).
PROCESS_OF = {"executor": "job", "checkpoints": "job", "clip": "job", "run": "parent", "pool": "parent",
              "outputs": "parent"}
PARTS = {"RunLog": "log", "Kills": "kills", "PackedIndex": "packed"}  # StateDir's attribute for each


def writer_table() -> dict[str, set[str]]:
    """{writer: the processes that may call it}, from the ledger's docstring."""
    import re

    import nstbatch.jobs.ledger as ledger

    table: dict[str, set[str]] = {}
    for match in re.finditer(r"^    \S.*?\s{2,}(job|parent)\s{2,}(.+)$", ledger.__doc__, re.M):
        for writer in re.findall(r"((?:StateDir|RunLog|Kills|PackedIndex|checkpoints|claims)\.\w+)", match.group(2)):
            table.setdefault(writer, set()).add(match.group(1))
    return table


def test_every_writer_is_called_only_in_the_process_the_ledgers_table_names():
    import ast

    from tests.conftest import ROOT

    table = writer_table()
    assert {"StateDir.mark_done", "RunLog.record", "claims.claim_at", "PackedIndex.write", "Kills.add"} <= set(table)
    calls: dict[str, set[str]] = {writer: set() for writer in table}
    wrong = []
    for path in sorted((ROOT / "nstbatch").rglob("*.py")):
        module = path.stem
        if module in ("ledger", "runlog", "kills", "packed", "claims"):
            continue  # the writers themselves
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            for writer, processes in table.items():
                owner, method = writer.split(".")
                # the classes' methods are called on an instance (the state directory's parts by
                # their attribute: state.log, state.kills, state.packed); module functions by name
                if name != method or owner[0].islower() == isinstance(node.func, ast.Attribute):
                    continue
                part = PARTS.get(owner)
                if part and not ast.unparse(node.func.value).endswith(part):
                    continue
                if module == owner:
                    continue  # the module's own definition and its internal calls
                process = PROCESS_OF.get(module)
                calls[writer].add(process or module)
                if process not in processes:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {writer} ({process or 'no known process'};"
                                 f" the table says {', '.join(sorted(processes))})")
    assert not wrong, "\n".join(wrong)
    assert calls["StateDir.mark_done"] == {"job"} and calls["RunLog.record"] == {"parent"}
    assert calls["claims.claim_at"] == {"job", "parent"}


def test_the_one_throughput_counts_images_made_over_the_attempts_that_made_them():
    from nstbatch.jobs.ledger import LineStatus, LogLine, rate_of

    made = [LogLine("a", LineStatus.DONE, time=100.0, seconds=10.0),
            LogLine("b", LineStatus.DONE, time=110.0, seconds=10.0),
            LogLine("clip", LineStatus.DONE, time=130.0, seconds=20.0, images=8)]  # its frames, each
    assert rate_of(made) == pytest.approx(3600 * 10 / 40)
    nothing = [LogLine("c", LineStatus.PREEMPTED, time=500.0, seconds=300.0),  # a run stopped mid-job
               LogLine("d", LineStatus.FAILED, time=600.0, seconds=50.0),
               LogLine("e", LineStatus.STARTED, time=700.0)]
    assert rate_of(made + nothing) == rate_of(made)  # attempts that made nothing do not move it
    assert rate_of(nothing) is None
