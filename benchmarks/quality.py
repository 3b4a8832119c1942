"""Quality on real pairs: each candidate preset on every pair of a manifest, scored on the
two-axis yardstick (``nstbatch.engine.yardstick``: style 0 = the painting's statistics, 1 = none;
content 0 = the photo, 1 = as far as the painting), with its time per image, side by side in
one process, and a contact sheet to judge them by eye.

    python benchmarks/quality.py [--manifest manifests/pairs.yaml] [--size 512]
        [--only NAME ...] [--pairs ID ...] [--out benchmarks/quality-out] [--anchor PAIR_ID=IMAGE ...]
        [--candidate NAME=PRESET:KEY=VALUE;... ...] [--json rows.jsonl]

The pairs are the manifest's jobs (content and first style); the candidates are below. Each
picture is made as ``nstbatch run`` makes it (``nstbatch.jobs.single.stylize_job``: the content at the
output's size, the style targets from ONNX Runtime through the store, the same loop).
``--anchor`` scores another system's published image for one pair on the same yardstick
(default: jcjohnson/neural-style's Hoover Tower × Starry Night, docs/pairs/).
Prints a Markdown table (pair, candidate, seconds, style, content, the five per-layer style
distances) and writes every output and ``sheet.jpg`` (rows: pairs; columns: content, style,
candidates, anchor) to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from nstbatch.config import resolve_params
from nstbatch.io.images import load_image
from nstbatch.engine.pixels import to_pil, to_tensor
from nstbatch.io.manifest import read_manifest
from nstbatch.jobs.single import stylize_job
from nstbatch.engine.vgg import build_features
from nstbatch.styles.store import StyleTargetStore
from nstbatch.engine.yardstick import Yardstick

ROOT = Path(__file__).resolve().parent.parent

# name -> (preset, overrides). The default's row is the preset itself, so the table shows
# what a user gets.
# The default before issue 25 (the balanced costs, content + noise, 150 steps): the base of the
# candidates measured against it, and the figures `fast` is held to.
BEFORE_25 = {"init": "content+noise", "palette_mix": 1.0, "scale_carry": "image", "style_weight": 4.0,
             "steps": 150, "scale_steps": (0.7, 0.3), "average": 0.0}
# `fast` before the frontier's fourth run (2026-12-02): those costs on 100 Adam steps, 80 % at half size.
FAST_BEFORE = {**BEFORE_25, "steps": 100, "scale_steps": (0.8, 0.2)}
CANDIDATES = {
    "balanced (default)": ("balanced", {}),
    "fast": ("fast", {}),
    "quality": ("quality", {}),
    "balanced before issue 25": ("balanced", BEFORE_25),
    # Issue 25: the default from the content in the painting's colours, each scale from its own
    # content's detail plus the coarse painting (RESULTS.md, "The frontier, first run").
    "palette+detail": ("balanced", {**BEFORE_25, "init": "palette+noise", "scale_carry": "detail",
                                    "style_weight": 4.25}),
    "palette+detail beta 4": ("balanced", {**BEFORE_25, "init": "palette+noise", "scale_carry": "detail"}),
    "fast palette+detail": ("balanced", {**FAST_BEFORE, "init": "palette+noise", "scale_carry": "detail",
                                         "style_weight": 4.25}),
    # The second frontier run (2026-12-02): the default (half of the palette) with 10 more steps
    # at half size.
    "default, 160 steps": ("balanced", {"steps": 160, "scale_steps": (0.72, 0.28), "average": 0.0}),
    # The default of the second run, before iterate averaging (average 0.7) joined it.
    "default of the second run": ("balanced", {"average": 0.0}),
    # The third run (2026-12-02): the default's pieces on a `fast` budget (90 steps, 80 % at half size).
    "fast, the default's pieces": ("balanced", {"steps": 90, "scale_steps": (0.8, 0.2)}),
    # The default before style_cap: every pair pulled with the full beta.
    "uncapped": ("balanced", {**BEFORE_25, "style_cap": 0}),
    "fast before L-BFGS": ("balanced", FAST_BEFORE),
    # The fourth run's probe (the same commit, the same twelve pairs): `fast` at beta 8 and 7 (it took 8.5).
    "fast, beta 8": ("fast", {"style_weight": 8}),
    "fast, beta 7": ("fast", {"style_weight": 7}),
    # The default before the balanced norms: the seed's costs, alpha 80, the same schedule.
    "old-default": ("seed", {"steps": 150, "lr": 0.05, "content_layers": "relu4_2", "content_weight": 80,
                             "precision": "auto", "scales": "0.5,1", "scale_steps": "0.7,0.3"}),
    "seed (500 steps)": ("seed", {}),
    # Issue 25's loop pieces on the default before it, one at a time and together (no preset uses them).
    "average 0.99": ("balanced", {**BEFORE_25, "average": 0.99}),
    "warm": ("balanced", {**BEFORE_25, "scale_start": "warm"}),
    "warm + average 0.99": ("balanced", {**BEFORE_25, "scale_start": "warm", "average": 0.99}),
}
ANCHORS = {"hoovertowernight-starry_night": ROOT / "docs/pairs/hoovertowernight_starry_night_jcjohnson.jpg"}


def parse_candidate(text: str) -> tuple[str, tuple[str, dict[str, str]]]:
    """``NAME=PRESET[:KEY=VALUE;KEY=VALUE]`` -> (name, (preset, overrides))."""
    name, _, spec = text.partition("=")
    preset, _, settings = spec.partition(":")
    overrides = dict(item.split("=", 1) for item in settings.split(";") if item.strip())
    return name, (preset or "balanced", overrides)


def _sheet(rows: list[list[tuple[str, Image.Image | None]]], tile: int = 256) -> Image.Image:
    columns = max(len(row) for row in rows)
    sheet = Image.new("RGB", (columns * tile, len(rows) * (tile + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, (caption, image) in enumerate(row):
            x, y = c * tile, r * (tile + 16)
            if image is not None:
                thumb = image.copy()
                thumb.thumbnail((tile, tile))
                sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
            draw.text((x + 4, y + tile + 2), caption[:40], fill="black")
    return sheet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", default=ROOT / "manifests/pairs.yaml")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--only", nargs="*", help="names of candidates to run")
    ap.add_argument("--pairs", nargs="*", help="ids of the manifest's jobs to run (default: all)")
    ap.add_argument("--out", default=ROOT / "benchmarks/quality-out")
    ap.add_argument("--anchor", nargs="*", default=[], help="PAIR_ID=IMAGE: another system's result")
    ap.add_argument("--targets", default="onnx", choices=("onnx", "torch"), help="style targets' backend (run's default: onnx)")
    ap.add_argument("--json", help="also write every row here, one JSON object a line (for plot_frontier.py)")
    ap.add_argument("--candidate", nargs="*", default=[], metavar="NAME=PRESET[:KEY=VALUE;...]",
                    help="one more candidate, e.g. 'lr 0.08=balanced:lr=0.08'")
    args = ap.parse_args()
    extra = dict(parse_candidate(text) for text in args.candidate)
    anchors = dict(ANCHORS, **{k: Path(v) for k, v in (a.split("=", 1) for a in args.anchor)})
    candidates = {n: c for n, c in CANDIDATES.items() if not args.only or n in args.only}
    candidates.update(extra)  # asked for by name: always run
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [job for job in read_manifest(args.manifest).jobs if not args.pairs or job.id in args.pairs]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {len(jobs)} pairs at {args.size} px")
    print("| pair | candidate | s/image | style | content | relu1_1 | relu2_1 | relu3_1 | relu4_1 | relu5_1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    networks, rows, totals = {}, [], {name: [] for name in candidates}
    rows_file = open(args.json, "w") if args.json else None
    yardstick_net = None
    store = StyleTargetStore(backend=args.targets)  # as `nstbatch run` computes them
    for job in jobs:
        style_path = job.styles[0][0]
        content = to_tensor(load_image(job.content, args.size))
        style = to_tensor(load_image(style_path, args.size))
        yardstick = Yardstick(content, style, args.size, yardstick_net)
        yardstick_net = yardstick.net
        row = [(job.content.name, to_pil(content)), (style_path.name, to_pil(style))]
        for name, (preset, overrides) in candidates.items():
            params = resolve_params(preset, {"size": args.size, **overrides})
            key = (params.weights, params.feature_layers, params.pooling)
            if key not in networks:
                networks[key] = build_features(params)
            warm_up(job.content, job.styles[:1], params, networks[key], store)
            started = time.perf_counter()
            image = stylize_job(job.content, job.styles[:1], params, features=networks[key], store=store).image
            seconds = time.perf_counter() - started
            score = yardstick(image)
            totals[name].append((seconds, score))
            picture = to_pil(image)
            short = name.split(" (")[0]  # 'balanced (default)' -> 'balanced'
            picture.save(out / f"{job.id}_{''.join(c if c.isalnum() or c in '.-' else '_' for c in short)}.png")
            row.append((f"{short} {score.style:.3f}/{score.content:.3f}", picture))
            _print_row(job.id, name, seconds, score, rows_file)
        if job.id in anchors and Path(anchors[job.id]).is_file():
            anchor = to_tensor(load_image(anchors[job.id], args.size))
            score = yardstick(anchor)
            _print_row(job.id, f"anchor ({Path(anchors[job.id]).name})", None, score, rows_file)
            row.append((f"anchor {score.style:.3f}/{score.content:.3f}", to_pil(anchor)))
        rows.append(row)
    for name, results in totals.items():
        if results:
            n = len(results)
            print(f"| **mean** | {name} | {sum(s for s, _ in results) / n:.1f} | "
                  f"{sum(r.style for _, r in results) / n:.3f} | {sum(r.content for _, r in results) / n:.3f} "
                  f"| max style {max(r.style for _, r in results):.3f} | max content "
                  f"{max(r.content for _, r in results):.3f} | | | |")
    _sheet(rows).save(out / "sheet.jpg", quality=90)
    print(f"outputs and sheet.jpg in {out}")


def warm_up(content, styles, params, features, store) -> None:
    """One untimed step per scale, so that no candidate's time includes the one-off cost of
    preparing the kernels for this pair's image sizes (the first candidate of a pair would),
    nor its style target's (kept in the store's memory). Also flicker.py's."""
    steps = len(params.scales)
    stylize_job(content, styles, dataclasses.replace(params, steps=steps, scale_steps=(1 / steps,) * steps),
                features=features, store=store)


def _print_row(pair: str, name: str, seconds: float | None, score, rows_file=None) -> None:
    if rows_file is not None:
        rows_file.write(json.dumps({"pair": pair, "candidate": name, "seconds": seconds, "style": score.style,
                                    "content": score.content, "layers": score.style_layers}) + "\n")
        rows_file.flush()
    layers = " | ".join(f"{d:.3f}" for d in score.style_layers.values())
    time_cell = f"{seconds:.1f}" if seconds is not None else "—"
    print(f"| {pair} | {name} | {time_cell} | {score.style:.3f} | {score.content:.3f} | {layers} |", flush=True)


if __name__ == "__main__":
    main()
