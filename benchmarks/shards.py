"""Three shards of a 12-job manifest, run at once: the strict hash split (``--no-steal``) vs
shards that help each other once done with their own jobs (the default), side by side.

    python benchmarks/shards.py [--steps 60] [--size 48]

Prints, for each mode, when each of the three processes ended (seconds after the start) and
how many jobs each ran. The hash split of this manifest is 5 / 6 / 1 jobs. All three share this
machine's cores, as tasks of an array sharing a node would (on separate nodes the helping
run's total time shrinks too; here the cores are busy either way).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def draw(folder: Path) -> None:
    y, x = np.mgrid[0:40, 0:40] / 40
    for i in range(4):
        rgb = np.stack([np.sin(9 * x + i), np.cos(7 * y - 2 * x + i), np.sin(13 * x * y + i)], -1)
        Image.fromarray(((rgb + 1) * 127.5).astype(np.uint8)).save(folder / f"c{i}.png")
    Image.open(ROOT / "manifests" / "samples" / "swirls.png").save(folder / "s.png")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=48)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; 12 jobs of {args.steps} steps at"
          f" {args.size} px, 3 processes at once")
    print("| mode | shard 0 ends | shard 1 ends | shard 2 ends | spread | jobs run per shard |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        draw(folder)
        env["NSTBATCH_CACHE"] = str(folder / "cache")
        (folder / "m.csv").write_text("id,content,style,output,size,steps,content_layers,style_layers,seed\n" + "".join(
            f'j{i},c{i % 4}.png,s.png,out/j{i}.png,{args.size},{args.steps},relu2_2,"relu1_1,relu2_1",{i}\n'
            for i in range(12)))
        for mode, extra in (("strict (--no-steal)", ["--no-steal"]), ("helping (default)", [])):
            state = folder / f"state-{len(extra)}"
            started = time.monotonic()
            procs = [subprocess.Popen([sys.executable, "-m", "nstbatch", "run", "m.csv", "--shard", f"{i}/3",
                                       "--state-dir", str(state), "-q", *extra], cwd=folder, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(3)]
            ends: dict[int, float] = {}
            while len(ends) < 3:
                for i, proc in enumerate(procs):
                    if i not in ends and proc.poll() is not None:
                        ends[i] = time.monotonic() - started
                time.sleep(0.05)
            ran = [json.loads((state / f"summary-s{i}of3.json").read_text())["done"] for i in range(3)]
            print(f"| {mode} | {ends[0]:.0f} s | {ends[1]:.0f} s | {ends[2]:.0f} s |"
                  f" {max(ends.values()) - min(ends.values()):.1f} s | {' / '.join(map(str, ran))} |", flush=True)


if __name__ == "__main__":
    main()
