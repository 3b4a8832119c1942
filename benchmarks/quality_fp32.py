"""Does ``--preset quality`` end with a picture on the fp32 path (issue 46)? On an AMD machine
``precision: auto`` is fp32, where torch's L-BFGS line search once overflowed mid-job; this runs
every pair of ``manifests/pairs.yaml`` (and the four of ``../shared/tuning`` where that folder
is beside the repository: measuring only, never committed) through ``nstbatch run`` as a user
would, ``precision: fp32`` forced, and prints each pair's outcome, seconds and the updates its
descent undid (the guard: ``engine/descent.py``).

    python benchmarks/quality_fp32.py [--out benchmarks/quality-fp32-out] [--pairs ID ...] [--size 512] [--workers N]

The run is resumable (it is a manifest run): run it again to go on after a stop.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUNING = ROOT.parent / "shared" / "tuning"


def pairs() -> list[tuple[str, Path, Path]]:
    """(id, content, style) of pairs.yaml's jobs, then of the tuning photos × paintings."""
    text = (ROOT / "manifests" / "pairs.yaml").read_text()
    found = [(job, ROOT / "manifests" / content, ROOT / "manifests" / style) for job, content, style in
             re.findall(r"\{id: ([^,]+), content: ([^,]+),\s+style: ([^,]+),", text)]
    if TUNING.is_dir():
        found += [(f"{photo}-{painting}", TUNING / f"{photo}.jpg", TUNING / f"{painting}.jpg")
                  for photo in ("lion", "taj_mahal") for painting in ("hokusai_great_wave", "kandinsky_composition_vii")]
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "quality-fp32-out")
    ap.add_argument("--pairs", nargs="*", help="ids to run (default: all)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=1, help="CPU workers (nstbatch run --workers)")
    args = ap.parse_args()
    known = {p[0]: p for p in pairs()}
    chosen = [known[job] for job in args.pairs] if args.pairs else list(known.values())  # in the order given
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = args.out / "quality-fp32.yaml"
    manifest.write_text(f"defaults: {{preset: quality, size: {args.size}, precision: fp32}}\njobs:\n" + "".join(
        f"  - {{id: {job}, content: '{content}', style: '{style}', output: '{job}.jpg'}}\n"
        for job, content, style in chosen))
    code = subprocess.call([sys.executable, "-m", "nstbatch", "run", str(manifest), "--workers", str(args.workers)],
                           cwd=ROOT)
    lines = [json.loads(line) for line in (args.out / ".nstbatch" / manifest.name / "report.jsonl").read_text().splitlines()]
    print(f"\nnstbatch run exited {code}")
    print("| pair | outcome | s | updates undone |\n| --- | --- | --- | --- |")
    for job, _, _ in chosen:
        ended = [line for line in lines if line["id"] == job and line["status"] != "started"]
        if not ended:
            print(f"| {job} | not run | | |")
            continue
        last = ended[-1]
        undone = last.get("recoveries") or []
        print(f"| {job} | {last['status']} | {last.get('seconds') or 0:.0f} | {len(undone)}"
              + (f": {undone[0]}" if undone else "") + " |")


if __name__ == "__main__":
    main()
