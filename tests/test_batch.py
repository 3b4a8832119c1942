"""The orchestration half: one execution path (batches checkpoint too), each worker's own GPU
for ONNX Runtime, torch-free reading faces, memory pre-flight, isolation from crashing jobs,
and quarantine of jobs that kill their worker."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from nstbatch.jobs.ledger import LineStatus
from nstbatch.jobs.options import RunOptions
from nstbatch.jobs.run import run_manifest
from nstbatch.cli import main
from tests.conftest import CSV_HEADER, draw_inputs, kill_run, report_lines, spawn_run, wait_for
from tests.faults import KillWorker

COLUMNS = "id,content,style,output,size,steps,seed\n"


@pytest.fixture
def folder(tmp_path):
    draw_inputs(tmp_path, 2, 48, 40, 40)
    return tmp_path


def write(folder, rows):
    (folder / "m.csv").write_text(COLUMNS + "".join(rows))
    return folder / "m.csv"


def done_record(folder, job_id):
    return json.loads((folder / ".nstbatch" / "m.csv" / "done" / f"{job_id}.json").read_text())


@pytest.mark.slow
def test_batched_jobs_checkpoint_and_resume_at_their_step_after_a_kill(folder):
    # Shallow layers and many steps: a long pass of two 96 px jobs sharing style and parameters.
    (folder / "m.csv").write_text(CSV_HEADER + "".join(
        f'b{i},c{i}.png,s.png,out/b{i}.png,96,400,relu2_2,"relu1_1,relu2_1",0\n' for i in range(2)))
    proc = spawn_run(folder, "--batch", "2", "--checkpoint-every", "5", "-q")
    checkpoints = folder / ".nstbatch" / "m.csv" / "checkpoints"
    # Both batched jobs checkpoint every 5 steps, before any signal.
    wait_for(lambda: len(list(checkpoints.glob("*.pt"))) == 2, proc)
    kill_run(folder, proc)
    assert main(["run", str(folder / "m.csv"), "-q", "--in-process"]) == 0
    done = [line for line in report_lines(folder) if line["status"] == "done"]
    assert sorted(line["id"] for line in done) == ["b0", "b1"]
    # The orphaned worker got the run's stop signal (PR_SET_PDEATHSIG) and checkpointed once
    # more: each job resumes where the pass stopped, a step shared by both.
    assert done[0]["resumed_from_step"] >= 5 and done[0]["resumed_from_step"] == done[1]["resumed_from_step"]


class FakeOrt:
    """Enough of onnxruntime to see which GPU a session is opened on."""

    __version__ = "fake"

    def __init__(self):
        self.opened = []

    def SessionOptions(self):  # noqa: N802 - onnxruntime's name
        return type("Options", (), {})()

    def InferenceSession(self, path, options, providers):  # noqa: N802
        self.opened.append(providers)
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        return type("Session", (), {"get_providers": lambda self: names})()


def test_each_worker_opens_onnx_runtime_on_its_own_gpu(monkeypatch, tmp_path):
    import torch

    from nstbatch.styles import onnx_backend, store

    fake = FakeOrt()
    monkeypatch.setattr(onnx_backend, "onnxruntime", lambda: fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"gpu{index}")
    for device in ("cuda:0", "cuda:1"):
        onnx_backend.OnnxTargets.open(tmp_path / "m.onnx", ("relu1_1",), "tensorrt,cuda", device=device)
    trt = [dict(opened[0][1]) for opened in fake.opened]
    cuda = [dict(opened[1][1]) for opened in fake.opened]
    assert [t["device_id"] for t in trt] == [0, 1] and [c["device_id"] for c in cuda] == [0, 1]
    assert "gpu1" in trt[1]["trt_engine_cache_path"]  # its engine cache is that GPU's
    # and the targets store of a worker on cuda:1 passes its device down
    seen = []
    monkeypatch.setattr(onnx_backend.OnnxTargets, "open", classmethod(lambda cls, *a, **k: seen.append(k["device"])))
    monkeypatch.setattr(store, "export_targets_model", lambda *a, **k: None)
    monkeypatch.setattr(store, "check_providers", lambda *a: None)
    from nstbatch.config import resolve_params

    targets = store.StyleTargetStore(backend="onnx", cache_dir=tmp_path, device="cuda:1")
    (tmp_path / "onnx").mkdir()
    targets._engine(resolve_params())
    assert seen == [torch.device("cuda:1")]


@pytest.mark.slow
def test_validate_status_plan_and_report_never_import_torch_or_onnxruntime(folder):
    write(folder, ["a,c0.png,s.png,o/a.png,32,2,0\n"])
    script = (
        "import sys\n"
        "from nstbatch.cli import main\n"
        f"m = {str(folder / 'm.csv')!r}\n"
        "codes = [main(['validate', m]), main(['status', m]), main(['plan', m, '--shards', '2']),\n"
        f"         main(['report', m, '-o', {str(folder / 'r.html')!r}])]\n"
        "print(codes, [name for name in ('torch', 'onnxruntime') if name in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[0, 0, 0, 0] []", out.stdout + out.stderr


def test_the_default_preset_runs_at_size_40(folder, capsys):
    write(folder, ["small,c0.png,s.png,o/small.png,40,4,0\n"])
    assert main(["validate", str(folder / "m.csv")]) == 0
    assert main(["run", str(folder / "m.csv"), "-q", "--in-process"]) == 0
    with Image.open(folder / "o" / "small.png") as im:
        assert im.size == (40, 33)


def test_a_job_over_the_memory_limit_fails_alone_before_it_starts(folder, capsys, monkeypatch):
    write(folder, ["big,c0.png,s.png,o/big.png,1024,2,0\n", "small,c1.png,s.png,o/small.png,32,2,0\n"])
    monkeypatch.setenv("NSTBATCH_MEMORY_LIMIT", "300M")
    assert main(["validate", str(folder / "m.csv")]) == 0  # a warning, not a problem
    assert "big (1024x853 px) needs about" in capsys.readouterr().err
    assert main(["run", str(folder / "m.csv"), "--in-process", "--targets", "torch"]) == 1
    lines = {line["id"]: line for line in report_lines(folder) if line["status"] != "started"}
    assert lines["small"]["status"] == "done"
    error = lines["big"]["error"]
    assert lines["big"]["status"] == "failed" and lines["big"]["seconds"] < 5
    assert "needs about" in error and "GiB free (NSTBATCH_MEMORY_LIMIT)" in error and "smaller size" in error


def test_a_job_that_fits_only_with_activation_checkpointing_runs_with_it(folder, capsys, monkeypatch):
    from nstbatch.jobs.memory import HEADROOM, estimate
    from nstbatch.config import resolve_params

    params = resolve_params(None, {"size": 256, "steps": 2})
    plain, lean = estimate(params, 213, 256), estimate(params, 213, 256, checkpointing=True)
    assert lean.bytes < plain.bytes
    monkeypatch.setenv("NSTBATCH_MEMORY_LIMIT", str(int((plain.bytes + lean.bytes) / 2 / HEADROOM)))
    write(folder, ["mid,c0.png,s.png,o/mid.png,256,2,0\n"])
    assert main(["run", str(folder / "m.csv"), "-q", "--in-process", "--targets", "torch"]) == 0
    assert done_record(folder, "mid")["activation_checkpointing"] is True


@pytest.mark.slow
def test_a_worker_killed_mid_job_fails_that_job_alone_and_two_kills_quarantine_it(folder, capsys):
    m = write(folder, ["doomed,c0.png,s.png,o/doomed.png,32,6,666\n", "fine,c1.png,s.png,o/fine.png,32,6,1\n"])
    options = RunOptions(m, targets="torch", worker_setup=KillWorker(seed=666))
    summary, _ = run_manifest(options)
    assert (summary.done, summary.failed, summary.exit_code) == (1, 1, 1)
    (failed,) = [line for line in report_lines(folder) if line["status"] == "failed"]
    assert failed["id"] == "doomed" and "killed by SIGKILL" in failed["error"] and "out-of-memory" in failed["error"]
    summary, _ = run_manifest(options)  # the second kill of the same job: quarantined
    assert summary.quarantined == 1 and summary.exit_code == 1
    assert report_lines(folder)[-1]["status"] == LineStatus.QUARANTINED
    assert main(["run", str(m)]) == 1  # later runs skip it, saying why in one line
    err = capsys.readouterr().err
    assert "skipped doomed (m.csv:2): killed its worker 2 times" in err and "--force" in err
    assert main(["status", str(m)]) == 0
    assert "QUARANTINED doomed" in capsys.readouterr().out
    assert main(["run", str(m), "--force", "-q"]) == 0  # no fault now: --force retries it
    assert (folder / "o" / "doomed.png").is_file()


def test_cpu_workers_of_one_run_plan_into_their_share_of_the_memory(folder, monkeypatch):
    from nstbatch.jobs.executor import JobExecutor
    from nstbatch.jobs.ledger import StateDir
    from nstbatch.jobs.memory import HEADROOM, estimate
    from nstbatch.jobs.plan import plan_jobs
    from nstbatch.config import resolve_params
    from nstbatch.io.manifest import read_manifest

    m = write(folder, ["one,c0.png,s.png,o/one.png,64,2,0\n"])
    lean = estimate(resolve_params(None, {"size": 64}), 53, 64, checkpointing=True)
    monkeypatch.setenv("NSTBATCH_MEMORY_LIMIT", str(int(1.5 * lean.bytes / HEADROOM)))  # fits one, not half
    state = StateDir(folder / "state")
    planned = plan_jobs(read_manifest(m).jobs, state)
    options = RunOptions(m, targets="torch")
    (shared,) = JobExecutor(options, state.root, "cpu", peers=2).run(planned)
    assert shared.status == LineStatus.FAILED and "shared by 2 workers" in shared.error
    (alone,) = JobExecutor(options, state.root, "cpu").run(planned)
    assert alone.status == LineStatus.DONE
