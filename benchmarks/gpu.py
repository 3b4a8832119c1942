"""GPU figures for benchmarks/RESULTS.md, for one short run on a lent GPU (see gpu.sh).

    python benchmarks/gpu.py --content PHOTO --style PAINTING --big PAINTING [--out DIR] [--budget S]
    python benchmarks/gpu.py --smoke        (tiny sizes on whatever device there is: checks the script)

Sections, in order of importance; each is skipped once the time budget would be overrun:
 1. step time at 512 px: seed preset, fp32 vs bf16, batch 1 / 4 / 16 (ms per step per image);
 2. the default preset end to end at 512 px, batch 1 / 4 / 16, in seconds per image, and the
    seed preset's 500 steps for comparison, both scored on the two-axis yardstick
    (nstbatch.engine.yardstick: style and content, lower is better);
 3. how far a batched image is from its one-by-one run with the default settings;
    a 4000 px long side under a 24 GiB memory cap (bf16, two scales, activation checkpointing),
    and without checkpointing for comparison;
 4. style-target precompute: ONNX Runtime (CUDA, TensorRT) vs PyTorch, if this onnxruntime has them;
 5. torch.compile of the VGG-19 vs eager, at the size and batch of section 2.
Every figure is printed and appended as one JSON line to OUT/gpu.jsonl.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nstbatch.config import DEFAULT_PRESET, resolve_params  # noqa: E402
from nstbatch.io.images import load_image  # noqa: E402
from nstbatch.engine.pixels import to_pil, to_tensor  # noqa: E402
from nstbatch.engine.optimize import Memory, optimize as optimize_targets  # noqa: E402
from nstbatch.styles.store import StyleTargetStore  # noqa: E402
from nstbatch.engine.vgg import build_features  # noqa: E402
from nstbatch.engine.yardstick import Yardstick  # noqa: E402

STARTED = time.monotonic()


class Bench:
    def __init__(self, out: Path, budget: float, device: torch.device):
        self.out, self.budget, self.device = out, budget, device
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget - (time.monotonic() - STARTED)

    def emit(self, **record) -> None:
        print(json.dumps(record), flush=True)
        with open(self.out / "gpu.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn):
        self.sync()
        t = time.perf_counter()
        value = fn()
        self.sync()
        return time.perf_counter() - t, value

    def peak_gib(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else 0.0

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()


def image(path: str, size: int, device) -> torch.Tensor:
    return to_tensor(load_image(path, size)).to(device)


def batch_of(content: torch.Tensor, n: int) -> torch.Tensor:
    variants = [content, content.flip(-1)]
    return torch.cat([variants[i % 2] for i in range(n)])


def optimize(content, style, params, **options):
    """The engine's loop towards a style image, its targets made as every door makes them
    (``styles.store``, PyTorch on the content's device; after the first call from its memory)."""
    store = STORES.setdefault(str(content.device), StyleTargetStore(backend="torch", device=content.device))
    target, _ = store.for_images([(style, 1.0)], params, content)
    return optimize_targets(content, target, params, **options)


STORES: dict[str, StyleTargetStore] = {}


def step_times(b: Bench, content, style, size, batches, steps):
    for precision in ("fp32", "bf16"):
        params = resolve_params("seed", {"size": size, "steps": steps, "precision": precision})
        features = build_features(params, b.device)
        for n in batches:
            if b.left() < 20:
                return b.emit(section="step", skipped="time budget")
            x = batch_of(content, n)
            warm = resolve_params("seed", {"size": size, "steps": 3, "precision": precision})
            optimize(x, style, warm, features=features, report_every=10**9)
            b.reset_peak()
            seconds, _ = b.timed(lambda: optimize(x, style, params, features=features, report_every=10**9))
            b.emit(section="step", preset="seed", precision=precision, batch=n, size=list(x.shape[-2:]),
                   steps=steps, ms_per_step_per_image=round(1000 * seconds / steps / n, 2),
                   s_per_image_500_steps=round(500 * seconds / steps / n, 3), peak_gib=round(b.peak_gib(), 2))


def scores(yardstick: Yardstick, image) -> dict:
    score = yardstick(image[:1].float().cpu())
    return {"style": round(score.style, 3), "content": round(score.content, 3)}


def end_to_end(b: Bench, content, style, size, batches, seed_steps):
    yardstick = Yardstick(content.cpu(), style.cpu(), size)
    params = resolve_params(DEFAULT_PRESET, {"size": size})
    features = build_features(params, b.device)
    for n in batches:
        if b.left() < 25:
            return b.emit(section="default", skipped="time budget")
        x = batch_of(content, n)
        optimize(x, style, resolve_params(DEFAULT_PRESET, {"size": size, "steps": 4}), features=features)
        seconds, result = b.timed(lambda: optimize(x, style, params, features=features, report_every=10**9))
        b.emit(section="default", preset=DEFAULT_PRESET, steps=params.steps, precision=params.precision,
               batch=n, size=list(x.shape[-2:]), s_per_image=round(seconds / n, 3), **scores(yardstick, result.image))
        if n == batches[-1]:
            to_pil(result.image[0]).save(b.out / f"{DEFAULT_PRESET}_512.png")
    if b.left() < 40:
        return b.emit(section="seed500", skipped="time budget")
    seed = resolve_params("seed", {"size": size, "steps": seed_steps, "precision": "fp32"})
    seed_features = build_features(seed, b.device)
    seconds, result = b.timed(lambda: optimize(content, style, seed, features=seed_features, report_every=10**9))
    b.emit(section="seed500", preset="seed", steps=seed_steps, precision="fp32", batch=1,
           s_per_image=round(seconds, 3), **scores(yardstick, result.image))
    to_pil(result.image[0]).save(b.out / "seed_500.png")


def batch_equality(b: Bench, content, style, size, n):
    """How far a batched image is from its one-by-one run with the default settings (bf16,
    TF32, cuDNN autotuning: kernels, and so roundings, depend on the batch), in 8-bit levels,
    beside how far a 1e-6 nudge of the content moves the same run, and the quality of each."""
    params = resolve_params(DEFAULT_PRESET, {"size": size})
    features = build_features(params, b.device)
    yardstick = Yardstick(content.cpu(), style.cpu(), size)
    x = batch_of(content, n)
    run = lambda images: optimize(images, style, params, features=features, report_every=10**9).image
    together, alone = run(x)[1:2], run(x[1:2])
    nudged = run((x[1:2] + 1e-6 * torch.randn_like(x[1:2])).clamp(0, 1))
    for name, other in (("batched", together), ("nudged 1e-6", nudged)):
        levels = ((other - alone).abs() * 255).round()
        b.emit(section="batcheq", compare=f"{name} vs alone", batch=n, size=list(x.shape[-2:]),
               max_levels=int(levels.max()), mean_levels=round(float(levels.mean()), 3),
               share_over_2_levels=round(float((levels > 2).float().mean()), 4),
               score=scores(yardstick, other), score_alone=scores(yardstick, alone))


def big(b: Bench, path: str, side: int, cap_gib: float, steps: int):
    if b.left() < 60:
        return b.emit(section="big", skipped="time budget")
    if b.device.type == "cuda":
        total = torch.cuda.get_device_properties(b.device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * 2**30 / total))
    content = image(path, side, b.device)
    style = image(path, min(side, 1024), b.device)
    params = resolve_params(DEFAULT_PRESET, {"size": side, "steps": steps, "precision": "bf16",
                                     "scale_steps": "0.5,0.5"})
    features = build_features(params, b.device)
    for checkpointing in (None, False):
        torch.cuda.empty_cache() if b.device.type == "cuda" else None
        b.reset_peak()
        try:
            seconds, result = b.timed(lambda: optimize(content, style, params, features=features,
                                                       memory=Memory(checkpointing)))
            b.emit(section="big", size=list(content.shape[-2:]), cap_gib=cap_gib, steps=steps,
                   checkpointing="auto (on)" if checkpointing is None else checkpointing,
                   seconds=round(seconds, 2), peak_gib=round(b.peak_gib(), 2), ok=True)
            if checkpointing is None:
                to_pil(result.image[0]).convert("RGB").save(b.out / "big.jpg", quality=90)
            del result
        except torch.OutOfMemoryError as e:
            b.emit(section="big", size=list(content.shape[-2:]), cap_gib=cap_gib,
                   checkpointing=checkpointing, ok=False, error=str(e).splitlines()[0][:160])
    if b.device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def onnx_targets(b: Bench, style, reps: int):
    if b.left() < 30:
        return b.emit(section="onnx", skipped="time budget")
    import onnxruntime as ort

    from nstbatch.styles.onnx_backend import OnnxTargets, export_targets_model, relative_error
    from nstbatch.engine.targets import torch_style_targets
    from nstbatch.engine.vgg import VGGFeatures
    from nstbatch.engine.weights import load_weights

    available = ort.get_available_providers()
    b.emit(section="onnx", onnxruntime=ort.__version__, available=available)
    layers = resolve_params("seed").style_layers
    weights = load_weights()
    features = VGGFeatures(weights, layers).to(b.device)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "t.onnx"
        export_targets_model(weights, layers, "max", model)
        for spec in ("cuda", "tensorrt,cuda,cpu", "cpu"):
            if b.left() < 20:
                return b.emit(section="onnx", skipped="time budget")
            try:
                session = OnnxTargets.open(model, layers, spec, cache_root=Path(tmp))
            except Exception as e:  # a missing provider is a figure too
                b.emit(section="onnx", providers=spec, unavailable=str(e).splitlines()[0][:200])
                continue
            runs = {"torch": lambda: torch_style_targets(features, style, layers), "onnx": lambda: session(style)}
            times = {k: [] for k in runs}
            for run in runs.values():
                run()
            for _ in range(reps):
                for name, run in runs.items():
                    times[name].append(b.timed(run)[0])
            error = max(relative_error(session(style).tensors()[l].float().cpu(), runs["torch"]().tensors()[l].float().cpu())
                        for l in layers)
            torch_ms, onnx_ms = (1000 * statistics.median(times[k]) for k in ("torch", "onnx"))
            b.emit(section="onnx", providers=spec, provider=session.provider, size=list(style.shape[-2:]),
                   torch_ms=round(torch_ms, 2), onnx_ms=round(onnx_ms, 2),
                   torch_over_onnx=round(torch_ms / onnx_ms, 2), max_relative_error=float(f"{error:.2e}"))


def compiled(b: Bench, content, style, size, n, steps):
    if b.left() < 90:
        return b.emit(section="compile", skipped="time budget")
    params = resolve_params(DEFAULT_PRESET, {"size": size, "steps": steps, "scales": "1", "scale_steps": "1"})
    x = batch_of(content, n)
    for mode in ("eager", "default", "reduce-overhead"):
        if b.left() < 45:
            return b.emit(section="compile", mode=mode, skipped="time budget")
        features = build_features(params, b.device)
        if mode != "eager":
            features.compile_trunk(None if mode == "default" else mode)
        first, _ = b.timed(lambda: optimize(x, style, params, features=features, report_every=10**9))
        seconds, _ = b.timed(lambda: optimize(x, style, params, features=features, report_every=10**9))
        b.emit(section="compile", mode=mode, batch=n, size=list(x.shape[-2:]), steps=steps,
               first_run_s=round(first, 2), ms_per_step=round(1000 * seconds / steps, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parents[1] / "manifests"
    parser.add_argument("--content", default=str(here / "images" / "hoovertowernight.jpg"))
    parser.add_argument("--style", default=str(here / "images" / "starry_night.jpg"))
    parser.add_argument("--big", default=str(here / "samples" / "town.png"), help="image for the 4000 px section")
    parser.add_argument("--out", default="gpu-results")
    parser.add_argument("--budget", type=float, default=420, help="seconds for the whole script")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script itself")
    parser.add_argument("--only", nargs="*", default=None, help="section names to run")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    b = Bench(Path(args.out), args.budget, device)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none"
    b.emit(section="env", torch=torch.__version__, gpu=gpu, python=sys.version.split()[0])
    s = dict(size=64, batches=(1, 2), steps=4, seed_steps=6, side=160, big_steps=4, reps=2, n=2) if args.smoke \
        else dict(size=512, batches=(1, 4, 16), steps=40, seed_steps=500, side=4000, big_steps=6, reps=10, n=16)
    content, style = image(args.content, s["size"], device), image(args.style, s["size"], device)
    sections = {
        "step": lambda: step_times(b, content, style, s["size"], s["batches"], s["steps"]),
        "default": lambda: end_to_end(b, content, style, s["size"], s["batches"], s["seed_steps"]),
        "batcheq": lambda: batch_equality(b, content, style, s["size"], s["n"]),
        "big": lambda: big(b, args.big, s["side"], 24.0, s["big_steps"]),
        "onnx": lambda: onnx_targets(b, style, s["reps"]),
        "compile": lambda: compiled(b, content, style, s["size"], s["n"], s["steps"]),
    }
    for name, run in sections.items():
        if args.only is not None and name not in args.only:
            continue
        try:
            run()
        except Exception as e:  # one section's failure must not cost the others' figures
            b.emit(section=name, failed=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
    b.emit(section="done", seconds=round(time.monotonic() - STARTED, 1))


if __name__ == "__main__":
    main()
