"""What a trained network buys against the optimiser (issue 48), on one painting, as a user
would get it: a training tree of real photos (``../shared/photos`` and frames of
``../shared/video``: measuring only, never committed), ``nstbatch train`` through the library
call it makes (so the held-out yardstick is scored along the way: a curve), then held-out
contents stylized by ``nstbatch run`` four ways — the network, the network refined by
``--refine`` optimiser steps, the ``fast`` preset and the default — each output scored with the
yardstick against its (content, painting) at ``--size``, with seconds an image from the run's
own report. One machine, one run, side by side.

    python benchmarks/networks.py [--out benchmarks/networks-out] [--minutes 25] [--train-size 256]
        [--frames 18] [--refine 30] [--size 512] [--painting manifests/images/starry_night.jpg] [--batch 4] [--lr 1e-3] [--steps N] [--set style_cap=0]
        [--ways network,network+refine,fast,balanced]

Held out (never trained on): the photo of jcjohnson's examples, the Shipwreck and the Scream as
contents, the drawn harbour and town, and ``../shared/tuning``'s lion and Taj Mahal.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
HELD_OUT = [ROOT / "manifests" / "images" / "hoovertowernight.jpg", ROOT / "manifests" / "images" / "shipwreck.jpg",
            ROOT / "manifests" / "images" / "the_scream.jpg", ROOT / "manifests" / "samples" / "harbour.png",
            ROOT / "manifests" / "samples" / "town.png", SHARED / "tuning" / "lion.jpg",
            SHARED / "tuning" / "taj_mahal.jpg"]


WAYS = ("network", "network+refine", "fast", "balanced")


def training_tree(folder: Path, frames: int) -> int:
    """``../shared/photos`` and ``frames`` frames spread over each clip of ``../shared/video``,
    as images in ``folder``; how many."""
    import av
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for photo in sorted((SHARED / "photos").iterdir()):
        if photo.suffix.lower() in (".jpg", ".png"):
            Image.open(photo).convert("RGB").save(folder / f"{photo.stem}.png")
            count += 1
    for clip in sorted((SHARED / "video").glob("*.mp4")):
        with av.open(str(clip)) as container:
            decoded = [frame.to_image() for frame in container.decode(video=0)]
        for index in range(frames):
            decoded[index * len(decoded) // frames].save(folder / f"{clip.stem}-{index:02d}.png")
            count += 1
    return count


def nstbatch(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "nstbatch", *argv], cwd=ROOT, check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "networks-out")
    ap.add_argument("--minutes", type=float, default=25.0, help="training time: the steps that fit, measured")
    ap.add_argument("--train-size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=18, help="frames taken from each clip")
    ap.add_argument("--refine", type=int, default=30, help="refine_steps of the refined run")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--painting", type=Path, default=ROOT / "manifests" / "images" / "starry_night.jpg")
    ap.add_argument("--batch", type=int, default=4, help="crops a training step")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (Johnson: 1e-3)")
    ap.add_argument("--steps", type=int, default=0, help="train this many steps (0: as many as --minutes fit)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of the criterion over the default preset's, as run's --set")
    ap.add_argument("--ways", default=",".join(WAYS), help="which of the ways to run, by name, comma separated")
    args = ap.parse_args()
    out = args.out.resolve()
    photos = training_tree(out / "photos", args.frames)
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    for content in HELD_OUT:
        target = out / "heldout" / f"{content.stem}.png"
        if content.is_file() and not target.exists():
            from PIL import Image

            Image.open(content).convert("RGB").save(target)
    results = {"photos": photos, "painting": args.painting.name, "size": args.size,
               "train_size": args.train_size, "batch": args.batch, "lr": args.lr, "refine": args.refine,
               "set": args.set}
    results["training"] = train(out, args)
    results["methods"] = apply(out, args)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    contact_sheet(out, args.painting)


def contact_sheet(out: Path, painting: Path, tile: int = 200) -> Path:
    """``sheet.jpg``: a row per held-out content the repository may show (not ``../shared``'s
    photos: those are for measuring only); the content, the painting, then each way's output,
    to judge by eye."""
    from PIL import Image

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from quality import _sheet

    ways = [("network", "network"), ("network-refine", "network + refine"), ("fast", "fast"),
            ("balanced", "default")]
    rows = []
    private = {path.stem for path in HELD_OUT if SHARED in path.parents}
    for content in sorted(path for path in (out / "heldout").glob("*.png") if path.stem not in private):
        row = [(content.stem, Image.open(content).convert("RGB")), (painting.stem, Image.open(painting).convert("RGB"))]
        for stem, label in ways:
            made = out / "out" / stem / content.name
            row.append((label, Image.open(made).convert("RGB") if made.is_file() else None))
        rows.append(row)
    _sheet(rows, tile).save(out / "sheet.jpg", quality=88)
    return out / "sheet.jpg"


def train(out: Path, args) -> dict:
    """The network trained for ``--minutes`` (the steps a first short run says fit), with the
    held-out photos' yardstick every tenth of the way."""
    from nstbatch.config import resolve_params
    from nstbatch.jobs.train import TrainSpec, train_network

    params = resolve_params("balanced", {"size": str(args.size), **dict(item.split("=", 1) for item in args.set)})
    photos = tuple(sorted((out / "photos").glob("*.png")))
    per_step, steps = 0.0, args.steps
    if not steps:
        probe = TrainSpec(photos, (args.painting,), out / "nets" / "probe.onnx", params, size=args.train_size,
                          steps=6, batch=args.batch, side=args.size, score_size=64)
        times = []  # when each step ended: the steps alone, not the reading, targets and export around them
        train_network(probe, out / "state", on_step=lambda progress: times.append(time.monotonic()))
        per_step = (times[-1] - times[1]) / (len(times) - 2)
        steps = max(10, int(args.minutes * 60 / per_step))
    spec = TrainSpec(photos, (args.painting,), out / "nets" / "network.onnx", params, size=args.train_size,
                     steps=steps, batch=args.batch, side=args.size, lr=args.lr, score_every=max(1, steps // 10),
                     score_size=args.size)
    started = time.monotonic()
    result = train_network(spec, out / "state", notice=print,
                           on_step=lambda p: print(f"step {p.step}/{p.steps} cost {p.costs.total:.4g} (content"
                                                   f" {p.costs.content:.4g}, style {p.costs.style:.4g})"
                                                   f" {p.images_per_second:.2f} crops/s", flush=True)
                           if p.step % 10 == 0 else None)
    return {"steps": steps, "seconds": round(time.monotonic() - started, 1), "probe_seconds_a_step": round(per_step, 2),
            "curve": result.curve}


def apply(out: Path, args) -> dict:
    """The held-out contents through ``nstbatch run`` four ways; each method's mean yardstick
    and seconds an image."""
    from nstbatch.engine.pixels import to_tensor
    from nstbatch.engine.yardstick import Yardstick
    from nstbatch.io.images import load_image

    painting, net = to_tensor(load_image(args.painting)), None
    methods = {"network": "network: nets/network.onnx", "network+refine": f"network: nets/network.onnx, refine_steps:"
               f" {args.refine}", "fast": "preset: fast", "balanced (default)": "preset: balanced"}
    found = {}
    for name, keys in methods.items():
        if name.split(" ")[0] not in args.ways.split(","):
            continue
        stem = name.split(" ")[0].replace("+", "-")
        manifest = out / f"{stem}.yaml"
        manifest.write_text(f"defaults: {{size: {args.size}}}\njobs:\n  - {{dataset: heldout/, style_pool:"
                            f" ['{args.painting}'], {keys}, output: 'out/{stem}/{{content_stem}}.png'}}\n")
        started = time.monotonic()
        nstbatch("run", str(manifest))
        command = time.monotonic() - started
        lines = [json.loads(line) for line in (out / ".nstbatch" / manifest.name / "report.jsonl").read_text()
                 .splitlines()]
        seconds = [line["seconds"] for line in lines if line["status"] == "done"]
        scores = []
        for content in sorted((out / "heldout").glob("*.png")):
            photo = to_tensor(load_image(content))
            yardstick = Yardstick(photo, painting, args.size, net)
            net = yardstick.net  # one network for every score
            score = yardstick(to_tensor(load_image(out / "out" / stem / content.name)))
            scores.append({"content": content.stem, "style": round(score.style, 4), "content_figure":
                           round(score.content, 4)})
        found[name] = {"seconds_an_image": round(sum(seconds) / len(seconds), 2), "pairs": scores,
                       "command_seconds": round(command, 1),
                       "style": round(sum(s["style"] for s in scores) / len(scores), 4),
                       "content": round(sum(s["content_figure"] for s in scores) / len(scores), 4)}
    return found


if __name__ == "__main__":
    main()
