"""The cluster recipe: consistent with the code it drives, valid bash, and doing what it says
under a stand-in for SLURM."""
import shutil
import subprocess

import pytest

from nstbatch.jobs.ledger import EXIT_PREEMPTED
from tests.conftest import ROOT

SCRIPT = ROOT / "manifests" / "slurm_array.sbatch"


def test_sbatch_script_agrees_with_the_code():
    text = SCRIPT.read_text()
    assert "#SBATCH --signal=B:USR1@120" in text and "#SBATCH --requeue" in text
    assert f"REQUEUE_CODE={EXIT_PREEMPTED}" in text
    assert "--shard auto" in text and "scontrol requeue" in text


def _stand_ins(tmp_path, nstbatch_body: str) -> dict:
    """``nstbatch`` and ``scontrol`` stand-ins on PATH; the environment a SLURM task sees."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nstbatch").write_text("#!/bin/bash\n" + f"echo \"$@\" > {tmp_path}/args\n" + nstbatch_body)
    (bin_dir / "scontrol").write_text(f"#!/bin/bash\necho \"$@\" > {tmp_path}/scontrol\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_JOB_ID": "77",
            "SLURM_ARRAY_TASK_ID": "3", "NSTBATCH_CACHE": str(tmp_path / "cache")}


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("code", [0, 1, 2])
def test_sbatch_script_ends_with_the_run_s_exit_code_and_no_requeue_without_a_signal(tmp_path, code):
    env = _stand_ins(tmp_path, f"exit {code}\n")
    assert subprocess.run(["bash", str(SCRIPT), "m.csv", "--batch", "4"], env=env, cwd=tmp_path).returncode == code
    assert (tmp_path / "args").read_text().split()[:4] == ["run", "m.csv", "--shard", "auto"]
    assert "--batch 4" in (tmp_path / "args").read_text()  # the script's own arguments reach the run
    assert not (tmp_path / "scontrol").exists()  # a failed job is never requeued


@pytest.mark.slow
@pytest.mark.parametrize("signame, requeued", [("SIGUSR1", True), ("SIGTERM", False)])
def test_sbatch_script_requeues_on_the_time_limit_warning_but_never_on_scancel(tmp_path, signame, requeued):
    import signal
    import time

    env = _stand_ins(tmp_path, f"trap 'echo got-usr1 > {tmp_path}/signal; sleep 0.2; exit {EXIT_PREEMPTED}' USR1\n"
                               f"trap 'echo got-term > {tmp_path}/signal; sleep 0.2; exit {EXIT_PREEMPTED}' TERM\n"
                               f"touch {tmp_path}/started\n"
                               "while true; do sleep 0.05; done\n")
    proc = subprocess.Popen(["bash", str(SCRIPT), "m.csv"], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(getattr(signal, signame))  # USR1: --signal=B:USR1@120; TERM: scancel
    assert proc.wait(timeout=20) == (0 if requeued else EXIT_PREEMPTED)
    assert (tmp_path / "signal").read_text().strip() == ("got-usr1" if requeued else "got-term")
    if requeued:
        assert (tmp_path / "scontrol").read_text().split() == ["requeue", "77_3"]
    else:
        assert not (tmp_path / "scontrol").exists()  # a user's scancel is never turned into a requeue
    args = (tmp_path / "args").read_text().split()
    assert args[:4] == ["run", "m.csv", "--shard", "auto"]


def test_kubernetes_indexed_job_agrees_with_the_code():
    import yaml

    from nstbatch.jobs.shards import detect_shard, shard_of

    spec = yaml.safe_load((ROOT / "manifests" / "k8s_indexed_job.yaml").read_text())["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    command = container["command"]
    shards = int(command[command.index("--shards") + 1])
    assert spec["completionMode"] == "Indexed" and spec["completions"] == shards
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    retry = [rule for rule in spec["podFailurePolicy"]["rules"] if "onExitCodes" in rule]
    assert retry[0]["action"] == "Ignore" and retry[0]["onExitCodes"]["values"] == [EXIT_PREEMPTED]
    assert retry[0]["onExitCodes"]["containerName"] == container["name"]
    mount = container["volumeMounts"][0]["mountPath"]
    state = command[command.index("--state-dir") + 1]
    cache = {e["name"]: e["value"] for e in container["env"]}["NSTBATCH_CACHE"]
    assert command[command.index("--shard") + 1] == "auto"
    assert state.startswith(mount + "/") and cache.startswith(mount + "/")  # shared by every pod
    # Each completion index is one shard, and together they cover every job once.
    found = [detect_shard({"JOB_COMPLETION_INDEX": str(i)}, shards) for i in range(spec["completions"])]
    assert sorted(s.index for s in found) == list(range(shards))
    ids = [f"job-{i}" for i in range(50)]
    assert sorted(i for s in found for i in ids if shard_of(i, s.count) == s.index) == sorted(ids)


@pytest.mark.parametrize("name", ["example.csv", "example.yaml", "gallery.yaml", "pairs.yaml", "pairs_heldout.yaml"])
def test_every_bundled_manifest_validates(name):
    from nstbatch.io.manifest import read_manifest
    from nstbatch.io.validate import validate

    manifest = read_manifest(ROOT / "manifests" / name)
    assert manifest.jobs and not manifest.problems
    assert validate(manifest) == [], name
