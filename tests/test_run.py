"""``nstbatch run``, ``validate`` and ``status`` end to end, on tiny images."""
import json
import os
import re
import signal

import pytest
from PIL import Image

from tests.conftest import has_started, pattern, report_lines, run_cli, spawn, wait_for

HEADER = "id,content,style,output,size,steps,content_layers,style_layers\n"


def tiny_row(job_id, content, style, output, steps=3):
    return f'{job_id},{content},{style},{output},32,{steps},relu2_2,"relu1_1,relu2_1"\n'


@pytest.fixture
def folder(tmp_path):
    for i in range(3):
        Image.fromarray(pattern(40, 36, phase=i), "RGB").save(tmp_path / f"c{i}.png")
    Image.fromarray(pattern(36, 36, phase=5)[:, ::-1].copy(), "RGB").save(tmp_path / "s.png")
    # a PNG whose header is fine (so validation passes) but whose pixels are cut off
    good = tmp_path / "c0.png"
    broken = tmp_path / "broken.png"
    Image.fromarray(pattern(200, 200), "RGB").save(broken)
    broken.write_bytes(broken.read_bytes()[:400])
    assert good.exists()
    return tmp_path


def six_rows(folder, steps_of_row_3=3):
    rows = [tiny_row("j0", "c0.png", "s.png", "out/j0.png"),
            tiny_row("j1", "c1.png", "s.png", "out/j1.png"),
            tiny_row("j2", "c2.png", "s.png", "out/j2.png", steps=steps_of_row_3),
            tiny_row("bad", "broken.png", "s.png", "out/bad.png"),
            tiny_row("j4", "c0.png", "c1.png", "out/j4.png"),
            tiny_row("j5", "c1.png", "c2.png|s.png", "out/j5.jpg")]
    path = folder / "m.csv"
    path.write_text(HEADER + "".join(rows))
    return path


def test_corrupt_content_fails_alone_rerun_touches_nothing_edit_reruns_one_row(folder, capsys):
    manifest = six_rows(folder)
    code, out, err = run_cli(capsys, "run", manifest)
    assert code == 1
    outputs = sorted(p.name for p in (folder / "out").iterdir())
    assert outputs == ["j0.png", "j1.png", "j2.png", "j4.png", "j5.jpg"]  # nothing else among them
    for name in outputs:
        with Image.open(folder / "out" / name) as im:
            im.load()
    lines = report_lines(folder, started=False)
    failed = [l for l in lines if l["status"] == "failed"]
    assert len(lines) == 6 and [l["id"] for l in failed] == ["bad"]
    assert sorted(l["id"] for l in report_lines(folder, started=True) if l["status"] == "started") == \
        sorted(l["id"] for l in lines)  # each attempt is on record from its start
    assert "broken.png" in failed[0]["error"] and "truncated or corrupt" in failed[0]["error"]
    assert "FAILED bad (m.csv:5)" in err and "done 5, already done 0, failed 1" in out
    assert all(l["device"] == "cpu" and "seconds" in l for l in lines)
    assert all(isinstance(l["costs"]["total"], float) for l in lines if l["status"] == "done")

    mtimes = {p.name: p.stat().st_mtime_ns for p in (folder / "out").iterdir()}
    code, out, _ = run_cli(capsys, "run", manifest)
    assert code == 1 and "done 0, already done 5, failed 1" in out
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "out").iterdir()} == mtimes
    assert [l["id"] for l in report_lines(folder, started=False)[6:]] == ["bad"]  # only the failed one retried

    six_rows(folder, steps_of_row_3=4)  # edit one row's steps
    code, out, _ = run_cli(capsys, "run", manifest, "--dry-run")
    assert code == 0 and "run   (parameters or inputs changed)" in out and "3 to run" not in out
    code, out, _ = run_cli(capsys, "run", manifest)
    assert "done 1, already done 4, failed 1" in out
    changed = {p.name for p in (folder / "out").iterdir() if p.stat().st_mtime_ns != mtimes[p.name]}
    assert changed == {"j2.png"}

    code, out, _ = run_cli(capsys, "status", manifest)
    assert "done 5, failed 1, invalid 0, pending 0" in out and "FAILED bad" in out


def test_changed_input_reruns_its_jobs_and_force_reruns_all(folder, capsys):
    manifest = folder / "m.csv"
    manifest.write_text(HEADER + tiny_row("a", "c0.png", "s.png", "o/a.png") + tiny_row("b", "c1.png", "s.png", "o/b.png"))
    assert run_cli(capsys, "run", manifest)[0] == 0
    Image.fromarray(pattern(40, 36, phase=9), "RGB").save(folder / "c1.png")
    code, out, _ = run_cli(capsys, "run", manifest, "--dry-run")
    assert "skip  (done)" in out and "run   (parameters or inputs changed)" in out
    code, out, _ = run_cli(capsys, "run", manifest, "--force", "--dry-run")
    assert "2 to run" in out
    (folder / "o" / "a.png").unlink()
    code, out, _ = run_cli(capsys, "run", manifest, "--dry-run")
    assert "run   (output missing)" in out


def test_invalid_manifest_is_refused_before_any_work_unless_skip_invalid(folder, capsys):
    manifest = folder / "m.csv"
    manifest.write_text(HEADER + tiny_row("a", "c0.png", "s.png", "o/a.png")
                        + tiny_row("b", "missing.png", "s.png", "o/b.png"))
    code, out, err = run_cli(capsys, "validate", manifest)
    assert code == 1 and "m.csv:3: content:" in err and "2 job(s), 1 ready, 1 with a problem; 1 problem(s)" in out
    code, _, err = run_cli(capsys, "run", manifest)
    assert code == 2 and "m.csv:3" in err and "nothing was run" in err and "Traceback" not in err
    assert not (folder / "o").exists() and not (folder / ".nstbatch").exists()
    code, out, _ = run_cli(capsys, "run", manifest, "--skip-invalid")
    assert code == 1 and (folder / "o" / "a.png").exists() and "invalid 1" in out
    code, out, _ = run_cli(capsys, "validate", folder / "nope.csv")
    assert code == 2


def test_state_dir_can_move_and_nothing_lands_among_outputs(folder, capsys, tmp_path_factory):
    state = tmp_path_factory.mktemp("shared") / "state"
    manifest = folder / "m.csv"
    manifest.write_text(HEADER + tiny_row("a", "c0.png", "s.png", "o/a.png"))
    assert run_cli(capsys, "run", manifest, "--state-dir", state)[0] == 0
    assert sorted(p.name for p in (folder / "o").iterdir()) == ["a.png"]
    assert not (folder / ".nstbatch").exists()
    assert (state / "done" / "a.json").exists() and (state / "summary.json").exists()
    summary = json.loads((state / "summary.json").read_text())
    assert summary["done"] == 1 and summary["images_per_hour"] > 0
    assert "done 1" in run_cli(capsys, "status", manifest, "--state-dir", state)[1]


def test_yaml_manifest_runs_glob_cross_product(folder, capsys):
    manifest = folder / "m.yaml"
    manifest.write_text("""
defaults: {size: 32, steps: 2, content_layers: relu2_2, style_layers: "relu1_1,relu2_1"}
output_dir: results
jobs:
  - content: "c*.png"
    style: [s.png, c0.png]
    output: "{content_stem}_x_{style_stem}.png"
""")
    code, out, _ = run_cli(capsys, "run", manifest)
    assert code == 0 and "done 6" in out
    names = sorted(p.name for p in (folder / "results").iterdir())
    assert names == sorted(f"c{i}_x_{s}.png" for i in range(3) for s in ("s", "c0"))


def slow_manifest(folder):
    """Three jobs: a short first one, then two long enough that a signal sent once the second
    has started (an observed state, not a time) lands inside it on any machine."""
    manifest = folder / "m.csv"
    manifest.write_text("id,content,style,output,size,steps\n" + "".join(
        f"k{i},c{i}.png,s.png,out/k{i}.png,48,{60 if i == 0 else 400}\n" for i in range(3)))
    return manifest


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_mid_job_leaves_only_whole_outputs_and_the_next_run_completes(folder, capsys, sig):
    manifest = slow_manifest(folder)
    proc = spawn("run", manifest, "-q", cwd=folder)
    # the second job has started: the first is whole, the second under way
    wait_for(lambda: has_started(folder, "k1"), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and b"run the same command again" in err
        assert b"Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    out_dir = folder / "out"
    left = sorted(p.name for p in out_dir.iterdir())
    assert "k0.png" in left and set(left) <= {"k0.png", "k1.png"}  # no partial, no temp file
    for name in left:
        with Image.open(out_dir / name) as im:
            im.load()
    code, out, _ = run_cli(capsys, "run", manifest, "-q")
    assert code == 0 and f"done {3 - len(left)}, already done {len(left)}" in out
    for name in ("k0.png", "k1.png", "k2.png"):
        with Image.open(out_dir / name) as im:
            im.load()


# Where a stop can meet a run of three jobs, each reached by a state the run reports (its
# events), and the signal then raised in the run's own process: which event, and when.
STOP_MOMENTS = {
    # j1's costs at its second update: the stop lands inside j1, which checkpoints
    "a job in flight": ("step", lambda job, seen: job == "j1" and seen.step == 2),
    # j0 recorded, j1 not started yet
    "between two jobs": ("job_finished", lambda job, seen: job == "j0"),
    # j0's final costs: it has no update left and ends done; the stop met no job
    "a job just finished": ("step", lambda job, seen: job == "j0" and seen.step == seen.steps),
}


def test_a_forced_run_stopped_between_two_jobs_leaves_the_rest_for_its_requeue(folder, capsys, monkeypatch):
    """With --force every job runs again though its done record stands: a stop before a job's
    turn leaves it (exit 75), since only this run's own outcome settles a forced job."""
    manifest = folder / "m.csv"
    manifest.write_text(HEADER + "".join(tiny_row(f"j{i}", f"c{i}.png", "s.png", f"out/j{i}.png", steps=2)
                                         for i in range(3)))
    assert run_cli(capsys, "run", manifest, "-q")[0] == 0
    sent = stop_at(monkeypatch, signal.SIGTERM, *STOP_MOMENTS["between two jobs"])
    code, out, err = run_cli(capsys, "run", manifest, "--force")
    assert sent == [signal.SIGTERM] and code == 75, (out, err)
    summary = json.loads((folder / ".nstbatch" / "m.csv" / "summary.json").read_text())
    assert (summary["done"], summary["left"]) == (1, 2), summary
    assert "2 job(s) left for the next run" in err


def stop_at(monkeypatch, sig, event: str, when) -> list:
    """Raise ``sig`` in this process at the first ``event`` of the run's report (``RunProgress``)
    for which ``when(job id, what it heard)`` holds; returns the list the signal is noted in."""
    from nstbatch.progress import RunProgress

    current, sent = [None], []
    started, real = RunProgress.job_started, getattr(RunProgress, event)

    def job_started(self, job, number, count):
        current[0] = job.id
        return started(self, job, number, count)

    def hear(self, seen, *rest):
        job = seen.job.id if event == "job_finished" else current[0]
        if not sent and when(job, seen):
            sent.append(sig)
            signal.raise_signal(sig)  # its handler runs before this returns
        return real(self, seen, *rest)

    monkeypatch.setattr(RunProgress, "job_started", job_started)
    monkeypatch.setattr(RunProgress, event, hear)
    return sent


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 75)], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", list(STOP_MOMENTS))
def test_a_run_stopped_with_jobs_left_never_exits_0(folder, capsys, monkeypatch, moment, sig, code):
    """Ctrl-C exits 130 and a stop signal 75 (requeue) whenever a job is left, whatever the
    stop met; the next run finishes the rest."""
    manifest = folder / "m.csv"
    manifest.write_text(HEADER + "".join(tiny_row(f"j{i}", f"c{i}.png", "s.png", f"out/j{i}.png", steps=6)
                                         for i in range(3)))
    sent = stop_at(monkeypatch, sig, *STOP_MOMENTS[moment])
    code_seen, out, err = run_cli(capsys, "run", manifest)
    assert sent == [sig] and code_seen == code, (out, err)
    assert "Traceback" not in err
    if sig == signal.SIGINT:
        assert "run the same command again" in err
    else:
        assert "asks the job script to requeue" in err
    summary = json.loads((folder / ".nstbatch" / "m.csv" / "summary.json").read_text())
    assert summary["stopped_by"] == signal.Signals(sig).name and summary["done"] == 1
    checkpointed = moment == "a job in flight"
    assert (summary["preempted"], summary["left"]) == ((1, 2) if checkpointed else (0, 2)), summary
    assert (folder / ".nstbatch" / "m.csv" / "checkpoints" / "j1.pt").exists() == checkpointed
    monkeypatch.undo()
    code_seen, out, _ = run_cli(capsys, "run", manifest, "-q")
    assert code_seen == 0 and "done 2, already done 1" in out, out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_after_the_last_job_leaves_nothing_and_exits_0(folder, capsys, monkeypatch, sig):
    manifest = folder / "m.csv"
    manifest.write_text(HEADER + "".join(tiny_row(f"j{i}", f"c{i}.png", "s.png", f"out/j{i}.png") for i in range(2)))
    sent = stop_at(monkeypatch, sig, "job_finished", lambda job, seen: job == "j1")
    code, out, err = run_cli(capsys, "run", manifest, "-q")
    assert sent == [sig] and code == 0 and "done 2" in out, (out, err)


def test_stale_temp_file_from_a_kill_during_save_is_removed(folder, capsys):
    manifest = folder / "m.csv"
    manifest.write_text(HEADER + tiny_row("a", "c0.png", "s.png", "o/a.png"))
    (folder / "o").mkdir()
    (folder / "o" / ".a.png.x1y2.tmp").write_bytes(b"half an image")
    assert run_cli(capsys, "run", manifest)[0] == 0
    assert sorted(p.name for p in (folder / "o").iterdir()) == ["a.png"]


def test_a_job_is_done_however_its_manifest_is_named(folder, capsys, monkeypatch):
    (folder / "m.csv").write_text(HEADER + tiny_row("a", "c1.png", "s.png", "out/a.png"))
    monkeypatch.chdir(folder)
    assert run_cli(capsys, "run", "m.csv")[0] == 0  # relative to the working folder
    monkeypatch.chdir(folder.parent)
    code, out, _ = run_cli(capsys, "status", folder / "m.csv")  # absolute, from elsewhere
    assert code == 0 and "done 1, failed 0, invalid 0, pending 0" in out
    code, _, err = run_cli(capsys, "run", f"{folder.name}/m.csv", "--dry-run")
    assert "0 to run, 1 done" in _ + err


def test_a_restart_stats_its_inputs_instead_of_reading_them_unless_they_changed(folder, capsys, monkeypatch):
    import nstbatch.io.hashing

    rows = [tiny_row(f"j{i}", f"c{i}.png", "s.png", f"out/j{i}.png") for i in range(3)]
    (folder / "m.csv").write_text(HEADER + "".join(rows))
    index = folder / ".nstbatch" / "m.csv" / "hashes.jsonl"
    assert run_cli(capsys, "run", folder / "m.csv", "--dry-run")[0] == 0
    assert not index.exists()  # a dry run writes nothing
    assert run_cli(capsys, "run", folder / "m.csv", "-q")[0] == 0
    assert len(index.read_text().splitlines()) == 4  # three photos and the painting, once each
    with index.open("a") as f:
        f.write('{"key": ["torn')  # a kill mid-append: skipped
    read = []
    real = nstbatch.io.hashing.sha256_of
    monkeypatch.setattr(nstbatch.io.hashing, "sha256_of", lambda path: read.append(path.name) or real(path))
    code, out, _ = run_cli(capsys, "run", folder / "m.csv", "--dry-run")
    assert code == 0 and read == [] and "0 to run, 3 done" in out, out
    assert run_cli(capsys, "status", folder / "m.csv")[0] == 0 and read == []
    os.utime(folder / "c1.png")  # touched, same pixels: read again, still done
    Image.fromarray(pattern(40, 36, phase=7), "RGB").save(folder / "c2.png")  # new pixels: runs again
    code, out, _ = run_cli(capsys, "run", folder / "m.csv", "--dry-run")
    assert sorted(read) == ["c1.png", "c2.png"] and "1 to run, 2 done" in out, out
    [j2] = [line for line in out.splitlines() if " j2 " in line]
    assert not j2.startswith("skip"), out


def test_the_digest_index_keeps_each_files_latest_line_once_it_grows(tmp_path, monkeypatch):
    import hashlib

    import nstbatch.io.hashing
    from nstbatch.io.hashing import FileHashes

    monkeypatch.setattr(FileHashes, "COMPACT_AT", 6)
    photo, painting, index = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "state"
    painting.write_bytes(b"painting")
    counts = []
    for version in range(1, 6):  # a photo edited between five runs
        photo.write_bytes(b"photo" * version)
        hashes = FileHashes(index)
        hashes(photo), hashes(painting)
        hashes.save()
        counts.append(len((index / "hashes.jsonl").read_text().splitlines()))
    assert counts == [2, 3, 4, 5, 2]  # appended, then rewritten with each file's latest line
    monkeypatch.setattr(nstbatch.io.hashing, "sha256_of", lambda path: pytest.fail(f"read {path.name} again"))
    fresh = FileHashes(index)
    assert fresh(photo) == hashlib.sha256(b"photo" * 5).hexdigest()
    assert fresh(painting) == hashlib.sha256(b"painting").hexdigest()


def test_run_status_and_report_tell_one_story_with_every_problem_on_its_line(folder, capsys):
    """A missing input and a misspelt value: the run's last line, status and report use the same
    words and the same throughput figure, and status names each problem's line and input."""
    manifest = folder / "m.csv"
    manifest.write_text(HEADER + tiny_row("a", "c0.png", "s.png", "out/a.png") + tiny_row("b", "c1.png", "s.png", "out/b.png")
                        + tiny_row("gone", "missing.png", "s.png", "out/gone.png")
                        + tiny_row("typo", "c2.png", "s.png", "out/typo.png", steps="1O"))
    code, out, _ = run_cli(capsys, "run", manifest, "--skip-invalid", "-q")
    assert code == 1 and "done 2, already done 0, failed 0, invalid 2;" in out, out
    rate = re.search(r"([\d.]+) images/hour of job time", out).group(1)
    code, out, _ = run_cli(capsys, "status", manifest)
    assert code == 0
    assert re.search(r"INVALID gone \(m.csv:4\): content: \S*missing.png: no such file \(check the path\)", out), out
    assert "INVALID (m.csv:5): steps must be a whole number, got '1O'" in out, out
    assert f"done 2, failed 0, invalid 2, pending 0; {rate} images/hour of job time" in out, out
    code, out, _ = run_cli(capsys, "report", manifest, "-o", folder / "r.html")
    assert code == 0 and f"done 2, failed 0, invalid 2, pending 0; {rate} images/hour of job time" in out, out
    page = (folder / "r.html").read_text()
    assert "invalid 2" in page and rate in page and "m.csv:5" in page
