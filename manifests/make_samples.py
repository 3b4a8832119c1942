"""Make the sample images the example manifests use (run from anywhere; deterministic).

    python manifests/make_samples.py              # the samples/ of the example manifests
    python manifests/make_samples.py --tree DIR   # a small dataset: DIR/photos, DIR/paintings,
                                                  # and its manifest DIR/stylize.yaml
    python manifests/make_samples.py --clips DIR  # two clips (a pan over a photo, moving shapes)
                                                  # and their manifest DIR/stylize.yaml

Everything is drawn here from numbers, so the images are the project's own: two contents
(a harbour scene, a town) and two styles (swirling brush strokes, a stained-glass mosaic);
``--tree`` draws an ImageFolder-style tree of photos (class folders, a nested folder, the
same file name in two folders, ``.JPEG`` and ``.png``, annotation sidecars) and a pool of four
paintings, for trying dataset entries (docs/datasets.md).
"""
from __future__ import annotations

from pathlib import Path

import argparse

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent / "samples"


def harbour(w: int = 256, h: int = 192) -> Image.Image:
    y = np.linspace(0, 1, h)[:, None, None]
    sky = (1 - y) * np.array([70, 130, 210]) + y * np.array([250, 200, 150])
    im = Image.fromarray(np.broadcast_to(sky, (h, w, 3)).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    d.ellipse([170, 30, 210, 70], fill=(255, 235, 120))  # sun
    d.polygon([(0, 120), (60, 80), (120, 115), (190, 70), (256, 110), (256, 192), (0, 192)],
              fill=(60, 110, 70))  # hills
    d.rectangle([0, 135, 256, 192], fill=(30, 80, 150))  # sea
    for row in range(140, 192, 8):  # waves
        for x in range(-8, 256, 24):
            d.arc([x + (row % 16), row, x + 20 + (row % 16), row + 6], 180, 360, fill=(200, 225, 250))
    d.rectangle([40, 70, 56, 135], fill=(240, 240, 235))  # lighthouse
    d.rectangle([40, 90, 56, 100], fill=(200, 40, 40))
    d.polygon([(36, 70), (48, 56), (60, 70)], fill=(200, 40, 40))
    d.polygon([(120, 150), (170, 150), (160, 162), (128, 162)], fill=(90, 50, 30))  # boat
    d.polygon([(144, 110), (144, 148), (168, 148)], fill=(250, 250, 250))
    return im


def town(w: int = 192, h: int = 256) -> Image.Image:
    rng = np.random.default_rng(7)
    im = Image.new("RGB", (w, h), (180, 210, 235))
    d = ImageDraw.Draw(im)
    x = 0
    while x < w:
        bw, bh = int(rng.integers(24, 48)), int(rng.integers(80, 200))
        color = tuple(int(c) for c in rng.integers(90, 230, 3))
        d.rectangle([x, h - bh, x + bw, h], fill=color, outline=(40, 40, 40))
        for wy in range(h - bh + 8, h - 12, 16):
            for wx in range(x + 5, x + bw - 8, 10):
                d.rectangle([wx, wy, wx + 5, wy + 8], fill=(250, 240, 170))
        d.polygon([(x, h - bh), (x + bw // 2, h - bh - 18), (x + bw, h - bh)], fill=(120, 50, 40))
        x += bw + 2
    d.rectangle([0, h - 14, w, h], fill=(70, 70, 70))  # street
    return im


def swirls(size: int = 256) -> Image.Image:
    """Swirling strokes: a flow field of sinusoids in a blue-yellow palette."""
    y, x = np.mgrid[0:size, 0:size] / size
    angle = np.sin(6 * x + 3 * np.sin(5 * y)) + np.cos(7 * y - 2 * x)
    bands = 0.5 + 0.5 * np.sin(24 * (x * np.cos(angle) + y * np.sin(angle)))
    palette = np.array([[15, 30, 90], [40, 90, 170], [230, 200, 60], [250, 240, 180]], float)
    t = np.clip(bands * 3, 0, 2.999)
    i = t.astype(int)
    rgb = palette[i] * (1 - (t - i))[..., None] + palette[i + 1] * (t - i)[..., None]
    im = Image.fromarray(rgb.astype(np.uint8), "RGB")
    return im.filter(ImageFilter.GaussianBlur(0.8))


def mosaic(size: int = 256, cells: int = 60) -> Image.Image:
    """Stained glass: Voronoi cells in saturated colours with dark leading."""
    rng = np.random.default_rng(3)
    seeds = rng.random((cells, 2)) * size
    colors = rng.choice(np.array([[200, 30, 40], [30, 90, 200], [240, 190, 30], [30, 150, 80],
                                  [150, 40, 160], [240, 120, 30]]), cells)
    y, x = np.mgrid[0:size, 0:size]
    dist = (x[..., None] - seeds[:, 0]) ** 2 + (y[..., None] - seeds[:, 1]) ** 2  # (H, W, cells)
    order = np.sort(dist, axis=-1)
    nearest = dist.argmin(-1)
    edge = (np.sqrt(order[..., 1]) - np.sqrt(order[..., 0])) < 2.5
    rgb = colors[nearest].astype(float)
    rgb[edge] = (25, 20, 20)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def stripes(size: int = 256) -> Image.Image:
    """Bold diagonal bands in warm reds and ochres, with a wavering edge."""
    y, x = np.mgrid[0:size, 0:size] / size
    t = (np.sin(30 * (x + y) + 2 * np.sin(9 * y)) + 1) / 2
    rgb = (1 - t)[..., None] * np.array([180, 40, 30]) + t[..., None] * np.array([240, 190, 90])
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def dots(size: int = 256) -> Image.Image:
    """Pointillist dabs of green and violet on a pale ground."""
    rng = np.random.default_rng(11)
    im = Image.new("RGB", (size, size), (235, 230, 210))
    d = ImageDraw.Draw(im)
    for _ in range(size * 3):
        x, y, r = rng.integers(0, size), rng.integers(0, size), int(rng.integers(2, 6))
        d.ellipse([x - r, y - r, x + r, y + r], fill=[(40, 140, 70), (120, 60, 160), (220, 170, 40)][int(rng.integers(3))])
    return im


# The tree --tree draws: (path under photos/, picture, a colour shift per channel).
TREE = [("cat/c1.JPEG", harbour, (0, 0, 0)), ("cat/c2.png", town, (30, -20, 0)),
        ("dog/c1.JPEG", town, (-30, 10, 40)), ("dog/puppies/p1.png", harbour, (40, 20, -40))]


# The manifest --tree writes beside the tree: docs/datasets.md shows it (a test
# keeps the two the same).
STYLIZE_YAML = """defaults: {size: 224, crop: center}   # Stylized-ImageNet-style squares
jobs:
  - dataset: photos/            # a folder, walked recursively (symlinked folders are not followed)
    style_pool: paintings/      # a folder, a glob, or a list of files
    variants: 2                 # outputs per content image (default 1)
    assign: random              # random (default) | cycle | each (every style: a cross product)
    seed: 7                     # the assignment seed; variant v's noise seed is seed + v
    output: "stylized/{content_reldir}/{content_stem}_{variant}.jpg"
    copy: ["*.xml", "*.txt"]    # sidecar files copied, unchanged, into the mirrored tree
    jpeg_quality: 90            # any parameter, as for other entries
"""


def draw_tree(root: Path, side: int = 96) -> None:
    """``root/photos``: the photos of ``TREE`` (long side ``side``), an annotation ``.xml`` beside
    each ``cat/`` photo and a ``README.txt`` at the top; ``root/paintings``: four styles;
    ``root/stylize.yaml``: a manifest of the tree (``STYLIZE_YAML``)."""
    for rel, picture, shift in TREE:
        path = root / "photos" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        im = picture()
        im.thumbnail((side, side), Image.Resampling.LANCZOS)
        pixels = np.clip(np.asarray(im, np.int16) + np.array(shift), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(path, format="JPEG" if rel.endswith(".JPEG") else "PNG")
        if rel.startswith("cat/"):
            path.with_suffix(".xml").write_text(f"<annotation><object>cat</object><file>{path.name}</file></annotation>\n")
    (root / "photos" / "README.txt").write_text("photos drawn by manifests/make_samples.py\n")
    (root / "paintings").mkdir(parents=True, exist_ok=True)
    for name, make in [("swirls", swirls), ("mosaic", mosaic), ("stripes", stripes), ("dots", dots)]:
        make(side).save(root / "paintings" / f"{name}.png")
    (root / "stylize.yaml").write_text(STYLIZE_YAML)


# The manifest --shards writes beside the shards: docs/datasets.md shows it (a test keeps the two
# the same). A real dataset names its own range: "train-{000000..000146}.tar".
SHARDS_YAML = """defaults: {size: 256}
jobs:
  - dataset: "wds/train-{000000..000003}.tar"   # a brace range, a glob ("wds/*.tar") or a list
    style_pool: paintings/
    variants: 2
    output: "stylized/{shard_stem}.tar"        # a .tar: output shard n holds input shard n's samples
    format: jpg                                # the samples' image format (default: the input's)
    jpeg_quality: 90
    copy: [cls]                                # sidecar members copied into each output sample
"""


def draw_shards(root: Path, shards: int = 4, samples: int = 3, side: int = 96) -> None:
    """``root/wds/train-00000N.tar``: WebDataset shards of ``samples`` samples each (a ``.jpg``
    and its ``.cls`` label, keys as ImageNet's), ``root/paintings``: four styles,
    ``root/stylize.yaml``: a manifest of the shards (``SHARDS_YAML``)."""
    import io
    import tarfile

    (root / "wds").mkdir(parents=True, exist_ok=True)
    pictures = [harbour, town]
    for shard in range(shards):
        with tarfile.open(root / "wds" / f"train-{shard:06d}.tar", "w") as tar:
            for index in range(samples):
                key, label = f"n0144076{shard}_{index:05d}", (shard + index) % 2
                im = pictures[label]()
                im.thumbnail((side, side), Image.Resampling.LANCZOS)
                encoded = io.BytesIO()
                im.save(encoded, format="JPEG", quality=90)
                for name, data in ((f"{key}.jpg", encoded.getvalue()), (f"{key}.cls", str(label).encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), 0
                    tar.addfile(info, io.BytesIO(data))
    (root / "paintings").mkdir(parents=True, exist_ok=True)
    for name, make in [("swirls", swirls), ("mosaic", mosaic), ("stripes", stripes), ("dots", dots)]:
        make(side).save(root / "paintings" / f"{name}.png")
    (root / "stylize.yaml").write_text(SHARDS_YAML)


# The manifest --clips writes beside the clips (docs/video.md shows it).
CLIPS_YAML = """defaults: {size: 256}               # any preset: a clip is tied frame to frame
jobs:
  - video: pan.mp4                  # a video file (its audio is copied into the output)
    style: paintings/swirls.png
    output: stylized/pan.mp4
  - video: shapes/                  # or a folder of frames, sorted by name
    style: paintings/mosaic.png
    output: stylized/shapes/        # frames out, under the input's names
"""


def pan(frames: int = 24, width: int = 320, height: int = 180, step: int = 4) -> list[np.ndarray]:
    """A camera panning right over the tower photo of images/, a yellow disc drifting down
    across it (a thing that moves against the scene)."""
    photo = Image.open(Path(__file__).resolve().parent / "images" / "hoovertowernight.jpg").convert("RGB")
    scale = height / photo.height
    photo = np.asarray(photo.resize((round(photo.width * scale), height), Image.Resampling.LANCZOS))
    out = []
    for t in range(frames):
        frame = Image.fromarray(photo[:, step * t: step * t + width].copy())
        x, y = width * 2 // 3, 10 + 5 * t
        ImageDraw.Draw(frame).ellipse([x, y, x + 36, y + 36], fill=(250, 215, 60))
        out.append(np.asarray(frame))
    return out


def shapes(frames: int = 16, side: int = 192) -> list[np.ndarray]:
    """The harbour with a boat sailing right and a ball bouncing: things moving, camera still."""
    scene = np.asarray(harbour(side, side * 3 // 4))
    out = []
    for t in range(frames):
        frame = Image.fromarray(scene.copy())
        d = ImageDraw.Draw(frame)
        x = 10 + 8 * t
        d.polygon([(x, 110), (x + 40, 110), (x + 32, 122), (x + 8, 122)], fill=(120, 60, 30))
        d.line([(x + 20, 110), (x + 20, 84)], fill=(60, 40, 20), width=2)
        d.polygon([(x + 21, 86), (x + 21, 106), (x + 36, 106)], fill=(245, 245, 240))
        bounce = abs((t % 8) - 4) * 12
        d.ellipse([side - 60, 40 + bounce, side - 40, 60 + bounce], fill=(220, 40, 60))
        out.append(np.asarray(frame))
    return out


def draw_clips(root: Path, rate: int = 12) -> None:
    """``root/pan.mp4`` (H.264 with a quiet tone as its audio), ``root/shapes/`` (PNG frames),
    ``root/paintings`` and ``root/stylize.yaml`` (``CLIPS_YAML``)."""
    import av

    root.mkdir(parents=True, exist_ok=True)
    frames = pan()
    with av.open(str(root / "pan.mp4"), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        sound = out.add_stream("aac", rate=16000)
        for frame in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode())
        seconds = np.arange(16000 * len(frames) // rate) / 16000
        tone = av.AudioFrame.from_ndarray((0.1 * np.sin(2 * np.pi * 220 * seconds)).astype(np.float32)[None],
                                          format="flt", layout="mono")
        tone.sample_rate = 16000
        out.mux(sound.encode(tone))
        out.mux(sound.encode())
    (root / "shapes").mkdir(exist_ok=True)
    for index, frame in enumerate(shapes()):
        Image.fromarray(frame).save(root / "shapes" / f"frame{index:03d}.png")
    (root / "paintings").mkdir(exist_ok=True)
    for name, make in [("swirls", swirls), ("mosaic", mosaic)]:
        make(192).save(root / "paintings" / f"{name}.png")
    (root / "stylize.yaml").write_text(CLIPS_YAML)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="draw the dataset tree under this folder instead")
    parser.add_argument("--shards", type=Path, help="draw WebDataset shards under this folder instead")
    parser.add_argument("--clips", type=Path, help="draw two clips (a video, a folder of frames) under this folder")
    args = parser.parse_args()
    if args.clips:
        draw_clips(args.clips)
        print(args.clips / "pan.mp4", args.clips / "shapes", args.clips / "stylize.yaml")
        return
    if args.shards:
        draw_shards(args.shards)
        print(args.shards / "wds", args.shards / "paintings", args.shards / "stylize.yaml")
        return
    if args.tree:
        draw_tree(args.tree)
        print(args.tree / "photos", args.tree / "paintings", args.tree / "stylize.yaml")
        return
    HERE.mkdir(exist_ok=True)
    for name, make in [("harbour", harbour), ("town", town), ("swirls", swirls), ("mosaic", mosaic)]:
        make().save(HERE / f"{name}.png", optimize=True)
        print(HERE / f"{name}.png")


if __name__ == "__main__":
    main()
