"""Soak: a 200-job manifest of tiny images, killed with SIGKILL at random moments and restarted.

    python benchmarks/soak.py [--jobs 200] [--kills 10] [--seed 1] [--workers 1]

A driver starts `nstbatch run` (100 steps a job, checkpointing every 10), kills its whole process group
with SIGKILL after a random 1-8 s, and restarts it, ``--kills`` times; then lets a last run
finish. At the end it checks that every job is done exactly once (one done record, one 'done'
report line), every output decodes at the right size, no temporary file is left, and that the
report accounts for every attempt (each 'started' line is followed by its outcome, or was cut
short by one of the kills). Prints the figures for benchmarks/RESULTS.md; exit 1 if a check fails.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import pattern  # noqa: E402  (the test suite's deterministic images)


def _manifest(folder: Path, jobs: int) -> Path:
    for i in range(4):
        Image.fromarray(pattern(40, 32, phase=i), "RGB").save(folder / f"c{i}.png")
        Image.fromarray(pattern(32, 32, phase=7 + i)[:, ::-1].copy(), "RGB").save(folder / f"s{i}.png")
    manifest = folder / "m.csv"
    manifest.write_text("id,content,style,output,size,steps,content_layers,style_layers,seed\n" + "".join(
        f'j{i:03d},c{i % 4}.png,s{(i // 4) % 4}.png,out/j{i:03d}.png,32,100,relu2_2,"relu1_1,relu2_1",{i}\n'
        for i in range(jobs)))
    return manifest


def _drive(folder: Path, manifest: Path, args, rng: random.Random) -> tuple[int, list[str]]:
    """Run, SIGKILL the whole process group after a random delay, restart, ``args.kills``
    times; then let a last run finish. The kills made, and what each run did."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NSTBATCH_CACHE": str(folder / "cache")}
    command = [sys.executable, "-m", "nstbatch", "run", str(manifest), "-q", "--checkpoint-every", "10",
               "--workers", str(args.workers)]
    kills, runs = 0, []
    while True:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
        if kills < args.kills:
            delay = rng.uniform(1.0, 8.0)
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                kills += 1
                runs.append(f"killed after {delay:.1f} s")
                continue
        out, err = process.communicate()
        runs.append(f"finished, exit {process.returncode}")
        if process.returncode != 0:
            print(out.decode(), err.decode(), file=sys.stderr)
        return kills, runs


def _open_attempts(lines: list[dict]) -> int:
    """Attempts with a 'started' line and no outcome: each is one a kill cut short."""
    open_attempts = 0
    per_job = collections.defaultdict(list)
    for line in lines:
        per_job[line["id"]].append(line["status"])
    for statuses in per_job.values():
        pending = 0
        for status in statuses:
            if status == "started":
                open_attempts += pending  # the previous attempt never finished
                pending = 1
            else:
                pending = 0
        open_attempts += pending
    return open_attempts


def _problems(folder: Path, lines: list[dict], ids: list[str]) -> list[str]:
    """What is wrong with the finished run: records, report lines, outputs, temp files."""
    state = folder / ".nstbatch" / "m.csv"
    done_lines = collections.Counter(line["id"] for line in lines if line["status"] == "done")
    records = sorted(p.stem for p in (state / "done").glob("*.json"))
    problems = []
    if records != ids:
        problems.append(f"done records: {len(records)} of {len(ids)}")
    twice = [i for i, n in done_lines.items() if n > 1]
    missing = [i for i in ids if done_lines[i] == 0]
    if twice:
        problems.append(f"done twice in the report: {twice}")
    if missing:
        problems.append(f"no 'done' report line: {missing}")
    for i in ids:
        try:
            with Image.open(folder / "out" / f"{i}.png") as im:
                im.load()
                if im.size != (32, 26):
                    problems.append(f"{i}: size {im.size}")
        except OSError as e:
            problems.append(f"{i}: {e}")
    leftovers = [p.name for p in (folder / "out").iterdir() if not p.name.endswith(".png") or p.name.startswith(".")]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="nstbatch-soak-"))
    manifest = _manifest(folder, args.jobs)
    started = time.monotonic()
    kills, runs = _drive(folder, manifest, args, random.Random(args.seed))
    seconds = time.monotonic() - started
    state = folder / ".nstbatch" / "m.csv"
    lines = [json.loads(l) for p in sorted(state.glob("report*.jsonl")) for l in p.read_text().splitlines()]
    ids = [f"j{i:03d}" for i in range(args.jobs)]
    problems = _problems(folder, lines, ids)
    open_attempts = _open_attempts(lines)
    if open_attempts > kills * args.workers:
        problems.append(f"{open_attempts} attempts without an outcome for {kills} kills")
    resumed = sum(1 for l in lines if l.get("resumed_from_step"))
    records = len(list((state / "done").glob("*.json")))
    print(f"soak: {args.jobs} jobs, {args.workers} worker(s), {kills} SIGKILLs, {len(runs)} runs, {seconds:.0f} s")
    print(f"report lines: {dict(collections.Counter(l['status'] for l in lines))}; attempts cut short by a"
          f" kill: {open_attempts}; jobs resumed from a checkpoint: {resumed}")
    print(f"done records: {records}; outputs that decode: {args.jobs - sum('size' in p or ':' in p for p in problems)}")
    print("runs: " + "; ".join(runs))
    print("checks: " + ("all passed" if not problems else "FAILED: " + " | ".join(problems)))
    print(f"folder: {folder}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
