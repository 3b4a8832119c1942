"""What a run costs before and around its work: ``nstbatch run`` of one 32 px, 2-step job,
wall time of the whole command (imports, planning, the worker process, the weights), with
worker processes and ``--in-process``.

    python benchmarks/startup.py [--repeat 3] [--tree DIR ...]

``--tree`` runs the same command with other source trees first on PYTHONPATH (for example a
``git worktree`` of an older commit), interleaved with this one, so they compare side by side.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def once(tree: Path, folder: Path, *extra: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "nstbatch", "run", str(folder / "m.csv"), "--force", "-q",
                    "--state-dir", str(folder / "state"), *extra], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder)  # not ROOT: it would shadow --tree
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    trees = [*args.tree, ROOT]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        samples = ROOT / "manifests" / "samples"
        (folder / "m.csv").write_text(f"content,style,output,size,steps\n{samples / 'town.png'},"
                                      f"{samples / 'mosaic.png'},{folder / 'o.png'},32,2\n")
        once(ROOT, folder)  # warm the file cache and the style-target cache
        times = {(tree, mode): [] for tree in trees for mode in ("workers", "--in-process")}
        for _ in range(args.repeat):
            for tree in trees:
                times[(tree, "workers")].append(once(tree, folder))
                times[(tree, "--in-process")].append(once(tree, folder, "--in-process"))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.repeat} runs each, interleaved")
    print("| source tree | mode | median | runs |")
    print("| --- | --- | --- | --- |")
    for (tree, mode), values in times.items():
        print(f"| {tree} | {mode} | {statistics.median(values):.2f} s | "
              f"{', '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
