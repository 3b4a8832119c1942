"""The cluster recipe: consistent with the code it drives, valid bash, and doing what it says
under a stand-in for SLURM."""
import shutil
import subprocess
from pathlib import Path

import pytest

from nstbatch.batch.ledger import EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "manifests" / "slurm_array.sbatch"


def test_sbatch_script_agrees_with_the_code():
    text = SCRIPT.read_text()
    assert "#SBATCH --signal=B:USR1@120" in text and "#SBATCH --requeue" in text
    assert f"REQUEUE_CODE={EXIT_PREEMPTED}" in text
    assert "--shard auto" in text and "scontrol requeue" in text


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_sbatch_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.slow
def test_sbatch_script_forwards_the_warning_signal_and_requeues_on_75(tmp_path):
    import os
    import signal
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nstbatch").write_text(
        "#!/bin/bash\n"
        f"echo \"$@\" > {tmp_path}/args\n"
        f"trap 'echo got-usr1 > {tmp_path}/signal; sleep 0.2; exit {EXIT_PREEMPTED}' USR1\n"
        f"touch {tmp_path}/started\n"
        "while true; do sleep 0.05; done\n")
    (bin_dir / "scontrol").write_text(f"#!/bin/bash\necho \"$@\" > {tmp_path}/scontrol\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_JOB_ID": "77",
           "SLURM_ARRAY_TASK_ID": "3", "NSTBATCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(["bash", str(SCRIPT), "m.csv"], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@120 does
    assert proc.wait(timeout=20) == 0
    assert (tmp_path / "signal").read_text().strip() == "got-usr1"
    assert (tmp_path / "scontrol").read_text().split() == ["requeue", "77_3"]
    args = (tmp_path / "args").read_text().split()
    assert args[:4] == ["run", "m.csv", "--shard", "auto"]
