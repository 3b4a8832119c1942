"""A long clip's disk (issue 49, bounded disk): a drawn 1,000-frame 360p clip (a slow pan over
the Hoover Tower photo with two shapes crossing it, 25 fps, H.264) through a trained network,
the path ``nstbatch run`` takes for a clip entry naming ``network:`` (``clip.network_clip_job``:
the same ``FrameStore`` and segments as the optimiser's clips), while a thread measures the disk
its frames and output take every 0.1 s. The same painted frames are encoded in one go beside it,
to price the segments' keyframes in the output's size.

    python benchmarks/clip_disk.py --network nets/network.onnx [--frames 1000] [--out /tmp/clip-disk]
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def draw(path: Path, frames: int, width: int = 640, height: int = 360, rate: int = 25) -> None:
    """The pan: a window sliding across the photo scaled to twice the frame's width, two discs
    crossing it."""
    import av
    from PIL import Image, ImageDraw

    photo = Image.open(ROOT / "manifests" / "images" / "hoovertowernight.jpg").convert("RGB")
    photo = photo.resize((2 * width, round(photo.height * 2 * width / photo.width)))
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            left = round(index * (photo.width - width) / max(1, frames - 1))
            top = (photo.height - height) // 2
            frame = photo.crop((left, top, left + width, top + height))
            pen = ImageDraw.Draw(frame)
            x = (index * 3) % (width + 80) - 40
            pen.ellipse((x, 120, x + 60, 180), fill=(220, 60, 40))
            pen.ellipse((width - x - 50, 220, width - x, 270), fill=(40, 90, 220))
            for packet in video.encode(av.VideoFrame.from_image(frame)):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)


def disk(folders: list[Path]) -> int:
    return sum(path.stat().st_size for folder in folders if folder.exists() for path in folder.rglob("*")
               if path.is_file())


def main() -> None:
    from nstbatch.config import resolve_params
    from nstbatch.io.manifest import Job
    from nstbatch.io.video import ClipWriter, probe_clip
    from nstbatch.jobs.clip import NetworkFrames, network_clip_job
    from nstbatch.jobs.frames import SEGMENT_FRAMES, FrameStore
    from nstbatch.styles.networks import NetworkSession
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--network", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/clip-disk"))
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    clip = out / "pan.mp4"
    if not clip.exists():
        draw(clip, args.frames)
    info = probe_clip(clip)
    params = resolve_params(None, {"size": "640"})
    job = Job("pan", clip, (), out / "out" / "pan.mp4", params, "clip_disk", clip=True)
    store = FrameStore(out / "frames")
    session = NetworkSession.open(args.network, "cpu")
    whole = ClipWriter(out / "whole.mp4", info, info.width, info.height, params)  # one encoding, same frames
    pngs = []

    def paint(images: torch.Tensor) -> torch.Tensor:
        painted = torch.from_numpy(session(images.numpy())).clamp(0, 1)
        for image in painted:
            whole.write(np.asarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)), None)
        return painted

    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], disk([store.folder, job.output.parent]))
            pngs.append(len(list(store.folder.glob("*.png"))) if store.folder.exists() else 0)
            time.sleep(0.1)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    network_clip_job(job, store, NetworkFrames(paint))
    seconds = time.monotonic() - started
    stop.set()
    watcher.join()
    whole.close()
    output = job.output.stat().st_size
    frame_png = _png_size(store, info, session)
    result = {"frames": info.frames, "size": f"{info.width}x{info.height}", "segment_frames": SEGMENT_FRAMES,
              "seconds": round(seconds, 1), "output_bytes": output, "one_encoding_bytes": (out / "whole.mp4").stat()
              .st_size, "peak_bytes": peak[0], "png_frame_bytes": round(frame_png),
              "peak_over_output_in_frames": round((peak[0] - output) / frame_png, 1), "most_pngs_seen": max(pngs)}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def _png_size(store, info, session) -> float:
    """A painted frame's PNG, as the store keeps it: the mean of five spread over the clip."""
    import torch
    from PIL import Image

    from nstbatch.engine.pixels import to_pil, to_tensor
    from nstbatch.io.video import read_frames

    sizes = []
    for frame in read_frames(info):
        if frame.index % (info.frames // 5) == 0:
            painted = torch.from_numpy(session(to_tensor(Image.fromarray(frame.rgb)).numpy())).clamp(0, 1)
            path = store.folder / "sample.png"
            store.folder.mkdir(parents=True, exist_ok=True)
            to_pil(painted).save(path)
            sizes.append(path.stat().st_size)
            path.unlink()
    return float(np.mean(sizes))


if __name__ == "__main__":
    main()
