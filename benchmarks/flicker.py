"""Flicker: how steady a stylized clip is, per-frame stylization against the video mode, with
the style/content yardstick per frame beside it (steady must not mean washed out) and the time
per frame.

    python benchmarks/flicker.py [--clip NAME=CLIP@PAINTING ...] [--frames 12] [--size 320]
        [--only NAME ...] [--candidate NAME=PRESET:KEY=VALUE;... ...] [--json rows.jsonl]
        [--set KEY=VALUE ...] [--gif MODE ...] [--out benchmarks/flicker-out] [--network NAME=NETS/X.onnx ...]

Clips (default: the project's own, drawn by ``manifests/make_samples.py --clips``: a camera pan
over the tower photo with a disc drifting across it, under the Starry Night; moving shapes over
the drawn harbour, under the Scream) are cut to their first ``--frames`` frames at ``--size`` px
on the long side (even sides) and kept as PNG frames, so every mode reads the same pixels.

- ``per-frame``: each frame stylized on its own with the default, as ``nstbatch run`` does a
  folder of images (``stylize_job``);
- the video candidates: the clip as ``nstbatch run`` does a clip job (``clip.clip_job``: each
  frame after the first from the previous output warped into it, tied to it by the temporal
  cost; DIS flow computed ahead on threads);
- ``--network`` modes: the clip through a trained network as ``nstbatch run`` does a ``video:``
  entry that names ``network:`` (``clip.network_clip_job``: each frame one pass, no flow), in
  the network's own painting (give the clips that painting: the yardstick scores against it).

**Warping error** (Ruder et al.'s measure): the mean over frame pairs of the squared difference,
over the pixels the flow can be trusted for, between a frame and the previous frame warped into
it, pixels in [0, 1]. The flows are **Farneback's** (OpenCV), not the DIS flow the method uses,
so that the method is not graded by its own flow; the trusted pixels are the forward-backward
check (``temporal.reliable``) on those flows. The input clip's own figure is the floor (what
lighting and the flow's own error leave). Style and content: ``engine.yardstick`` per frame
(against that frame and the painting, at the frames' size), the mean over frames. Seconds: the
first frame, and each later frame's share of the rest (flow and every pass included), from the frames' finishing times.
Writes every stylized frame and, per clip, ``NAME.gif`` (the input, per-frame and the first
video mode side by side, or the modes ``--gif`` names) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from nstbatch.config import resolve_params
from nstbatch.engine.vgg import build_features
from nstbatch.engine.pixels import to_tensor
from nstbatch.engine.temporal import reliable, warp
from nstbatch.engine.yardstick import Yardstick
from nstbatch.io.images import load_image
from nstbatch.io.manifest import Job
from nstbatch.io.video import frame_files, probe_clip, read_frames
from nstbatch.jobs.clip import ClipCall, NetworkFrames, clip_job, network_clip_job
from nstbatch.jobs.frames import FrameStore
from nstbatch.jobs.single import stylize_job
from nstbatch.styles.store import StyleTargetStore

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "manifests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from quality import parse_candidate, warm_up  # noqa: E402  (the same candidates; the same warm-up)

PAINTINGS = ROOT / "manifests" / "images"
PER_FRAME = "per-frame"
# name -> (preset, overrides): the video mode as the docs' manifest starts it
CANDIDATES = {
    "video": ("balanced", {"temporal_weight": 60, "frame_steps": 50}),
    # later frames on every scale of the pyramid, as the first (frame_scales' other value)
    "video, all scales": ("balanced", {"temporal_weight": 60, "frame_steps": 50, "frame_scales": "all"}),
    # the masks as artistic-videos builds them: occlusions grown, the mask blurred (issue 49)
    "video, soft masks": ("balanced", {"temporal_weight": 60, "frame_steps": 50, "temporal_mask": "soft"}),
    "tw 20": ("balanced", {"temporal_weight": 20, "frame_steps": 50}),
    "tw 200": ("balanced", {"temporal_weight": 200, "frame_steps": 50}),
    "25 steps": ("balanced", {"temporal_weight": 60, "frame_steps": 25}),
    # the warped start alone, no temporal cost
    "warm start only": ("balanced", {"temporal_weight": 0, "frame_steps": 50}),
    # Ruder et al.'s multi-pass: a pass back and one forward again, each frame from its last picture (issue 49)
    "video, 3 passes": ("balanced", {"temporal_weight": 60, "frame_steps": 50, "passes": 3}),
}


def cut(clip: Path, frames: int, size: int, folder: Path) -> list[np.ndarray]:
    """The clip's first ``frames`` frames at ``size`` px on the long side (even sides), as
    ``folder/000001.png``…; returns them."""
    info = probe_clip(clip)
    scale = size / max(info.width, info.height)
    width, height = round(info.width * scale / 2) * 2, round(info.height * scale / 2) * 2
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for frame in read_frames(info):
        if frame.index >= frames:
            break
        rgb = Image.fromarray(frame.rgb).resize((width, height), Image.Resampling.LANCZOS)
        rgb.save(folder / f"{frame.index + 1:06d}.png")
        out.append(np.asarray(rgb))
    return out


def farneback(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    """The flow from RGB frame ``a`` to ``b`` (``a(x) ≈ b(x + flow(x))``), ``(1, 2, H, W)``: Farneback's,
    not the DIS the method uses."""
    import cv2

    gray_a, gray_b = (cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY) for x in (a, b))
    flow = cv2.calcOpticalFlowFarneback(gray_a, gray_b, None, 0.5, 4, 15, 5, 5, 1.2, 0)
    return torch.from_numpy(flow).permute(2, 0, 1).unsqueeze(0).float()


def checks(inputs: list[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each frame t ≥ 1: (the backward flow t → t−1, where it is trusted)."""
    out = []
    for t in range(1, len(inputs)):
        backward, forward = farneback(inputs[t], inputs[t - 1]), farneback(inputs[t - 1], inputs[t])
        out.append((backward, reliable(backward, forward)))
    return out


def warping_error(frames: list[np.ndarray], flows: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The mean over frame pairs of the trusted pixels' squared difference between a frame and
    the previous one warped into it (pixels in [0, 1])."""
    errors = []
    for t, (backward, weights) in enumerate(flows, start=1):
        now = torch.from_numpy(np.array(frames[t])).permute(2, 0, 1).unsqueeze(0).float() / 255
        before = torch.from_numpy(np.array(frames[t - 1])).permute(2, 0, 1).unsqueeze(0).float() / 255
        squared = ((now - warp(before, backward)) ** 2 * weights).sum()
        errors.append(float(squared / (3 * weights.sum()).clamp_min(1)))
    return sum(errors) / len(errors)


def yardstick_means(inputs: list[np.ndarray], outputs: list[np.ndarray], painting: Path, net) -> tuple[float, float, object]:
    side = max(inputs[0].shape[:2])
    style = to_tensor(load_image(painting, side))
    scores = []
    for content, output in zip(inputs, outputs):
        stick = Yardstick(to_tensor(Image.fromarray(content)), style, side, net)
        net = stick.net
        scores.append(stick(to_tensor(Image.fromarray(output))))
    return sum(s.style for s in scores) / len(scores), sum(s.content for s in scores) / len(scores), net


def gif(path: Path, columns: list[tuple[str, list[np.ndarray]]], rate: float = 8) -> None:
    """The clips side by side, captioned, as a looping GIF."""
    height, width = columns[0][1][0].shape[:2]
    pictures = []
    for t in range(len(columns[0][1])):
        sheet = Image.new("RGB", (width * len(columns), height + 14), "white")
        draw = ImageDraw.Draw(sheet)
        for c, (caption, frames) in enumerate(columns):
            sheet.paste(Image.fromarray(frames[t]), (c * width, 14))
            draw.text((c * width + 3, 1), caption[:width // 6], fill="black")
        pictures.append(sheet)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=round(1000 / rate), loop=0,
                     optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", nargs="*", default=[], metavar="NAME=CLIP@PAINTING",
                    help="a clip (video file or folder of frames) and the painting it is stylized with")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", type=int, default=320, help="the frames' long side")
    ap.add_argument("--only", nargs="*", help="names of candidates to run (per-frame is one)")
    ap.add_argument("--candidate", nargs="*", default=[], metavar="NAME=PRESET[:KEY=VALUE;...]")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="for every mode (a quick look: steps=10)")
    ap.add_argument("--gif", nargs="*", help="the modes side by side in each clip's GIF, after the input"
                    " (default: per-frame and the first video mode)")
    ap.add_argument("--json", help="also write every row here, one JSON object a line")
    ap.add_argument("--out", default=ROOT / "benchmarks/flicker-out")
    ap.add_argument("--network", nargs="*", default=[], metavar="NAME=NETS/X.onnx",
                    help="a mode: the clip through this trained network (its one painting)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = [(name, Path(clip), Path(painting)) for name, clip, painting in
             ((text.split("=", 1)[0], *text.split("=", 1)[1].rsplit("@", 1)) for text in args.clip)]
    if not clips:
        from make_samples import draw_clips

        drawn = out / "clips"
        draw_clips(drawn)
        clips = [("pan", drawn / "pan.mp4", PAINTINGS / "starry_night.jpg"),
                 ("shapes", drawn / "shapes", PAINTINGS / "the_scream.jpg")]
    candidates = {PER_FRAME: ("balanced", {}), **CANDIDATES, **dict(parse_candidate(t) for t in args.candidate)}
    candidates = {n: c for n, c in candidates.items() if not args.only or n in args.only or
                  n in dict(parse_candidate(t) for t in args.candidate)}
    trained = dict(text.split("=", 1) for text in args.network)
    candidates.update({name: ("balanced", {"network": path}) for name, path in trained.items()})
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.frames} frames at {args.size} px (long side)")
    print("| clip | mode | warping error | × per-frame | style | content | s first frame | s later frame |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows_file = open(args.json, "w") if args.json else None
    store, networks, net = StyleTargetStore(), {}, None
    for name, clip, painting in clips:
        folder = out / name / "input"
        shutil.rmtree(folder, ignore_errors=True)
        inputs = cut(clip, args.frames, args.size, folder)
        flows = checks(inputs)
        floor = warping_error(inputs, flows)
        _row(rows_file, name, "input (floor)", floor, None, None, None, None, None)
        columns, reference = [("input", inputs)], None
        for mode, (preset, overrides) in candidates.items():
            overrides = {k: v for k, v in overrides.items() if k != "network"}
            params = resolve_params(preset, {"size": args.size, **overrides,
                                             **dict(item.split("=", 1) for item in args.set)})
            key = (params.weights, params.feature_layers, params.pooling)
            if key not in networks:
                networks[key] = build_features(params)
            frames, times = _stylize(mode, folder, (painting, trained.get(mode)), params, networks[key], store,
                                     out / name / _slug(mode))
            error = warping_error(frames, flows)
            style, content, net = yardstick_means(inputs, frames, painting, net)
            reference = error if mode == PER_FRAME else reference
            # each later frame's share of the time, all its passes included (``passes``: a frame is made once a pass)
            later = (times[-1] - times[0]) / (len(frames) - 1) if len(frames) > 1 else None
            _row(rows_file, name, mode, error, error / reference if reference else None, style, content,
                 times[0], later)
            columns.append((mode, frames))
        shown = args.gif or list(candidates)[:2]
        gif(out / f"{name}.gif", [columns[0]] + [column for column in columns[1:] if column[0] in shown])
    print(f"frames and one GIF a clip in {out}")


def _stylize(mode: str, folder: Path, styles: tuple[Path, str | None], params, features, store, where: Path):
    """The clip's stylized frames, and when each was finished (seconds from the start):
    ``styles`` is the painting and the network (or None) that paints it."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    files, (painting, network) = frame_files(folder), styles
    if network is not None:
        return _through_network(folder, Path(network), params, where)
    warm_up(files[0], [(painting, 1.0)], params, features, store)
    started, times = time.perf_counter(), []
    if mode == PER_FRAME:
        frames = []
        for path in files:
            image = stylize_job(path, [(painting, 1.0)], params, features=features, store=store).image
            frames.append((image[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
            times.append(time.perf_counter() - started)
            Image.fromarray(frames[-1]).save(where / path.name)
        return frames, times
    job = Job(mode, folder, ((painting, 1.0),), where, params, str(folder), clip=True)
    with tempfile.TemporaryDirectory(dir=where.parent) as state:
        clip_job(job, store, FrameStore(Path(state)),
                 ClipCall(features, on_frame=lambda index, total: times.append(time.perf_counter() - started)))
    return [np.asarray(load_image(path)) for path in frame_files(where)], times


def _through_network(folder: Path, network: Path, params, where: Path):
    """The clip through ``network`` as ``run`` does a ``video:`` entry naming it."""
    from nstbatch.styles.networks import Networks

    networks = Networks("cpu")
    networks(network, torch.rand(1, 3, 64, 64), [None])  # the session opened and warm, as warm_up does
    job = Job("network", folder, (), where, params, str(folder), clip=True, network=network)
    started, times = time.perf_counter(), []
    with tempfile.TemporaryDirectory(dir=where.parent) as state:
        network_clip_job(job, FrameStore(Path(state)), NetworkFrames(
            lambda images: networks(network, images, [None] * len(images)),
            on_frame=lambda index, total: times.append(time.perf_counter() - started)))
    return [np.asarray(load_image(path)) for path in frame_files(where)], times


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)


def _row(rows_file, clip, mode, error, ratio, style, content, first, later) -> None:
    if rows_file is not None:
        rows_file.write(json.dumps({"clip": clip, "mode": mode, "warping_error": error, "ratio": ratio,
                                    "style": style, "content": content, "first_s": first, "later_s": later}) + "\n")
        rows_file.flush()

    def cell(value, form):
        return "—" if value is None else format(value, form)

    print(f"| {clip} | {mode} | {error:.5f} | {cell(ratio, '.2f')} | {cell(style, '.3f')} | {cell(content, '.3f')} "
          f"| {cell(first, '.1f')} | {cell(later, '.1f')} |", flush=True)


if __name__ == "__main__":
    main()
