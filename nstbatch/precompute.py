"""Style targets for jobs: from the cache, or computed once (ONNX Runtime or PyTorch) and
cached. Shared by ``run`` and ``precompute``."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .cache import TargetCache
from .environment import cache_root
from .color import prepare_style
from .config import StyleParams
from .errors import UsageError
from .images import fit_image, load_image
from .pixels import to_tensor
from .manifest import Job
from .onnx_backend import OnnxTargets, check_providers, export_targets_model, model_key
from .hashing import FileHashes
from .targets import blend_targets, target_key, target_names, torch_style_targets
from .vgg import VGGFeatures, check_image_size
from .weights import load_weights

BACKENDS = ("onnx", "torch")


class StyleTargetStore:
    """``get(style, params)`` → an unscaled style target (``targets``: per-position second
    moments and channel means), computing each distinct target at most once per cache (and
    once per process without one)."""

    def __init__(self, *, backend: str = "onnx", cache_dir=None, device: torch.device | str = "cpu",
                 providers: str = "auto", allow_fallback: bool = False,
                 notice: Callable[[str], None] | None = None, memory: int = 64):
        if backend not in BACKENDS:
            raise UsageError(f"unknown targets backend {backend!r}", hint="use onnx or torch")
        if backend == "onnx":
            check_providers(providers, allow_fallback)
        self.backend, self.device = backend, torch.device(device)
        self.root = cache_root(cache_dir)
        self.cache = TargetCache(self.root)
        self.providers, self.allow_fallback, self.notice = providers, allow_fallback, notice
        self.computed = 0
        self.reused = 0
        self._hashes = FileHashes()
        self._memory: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
        self._memory_size = memory
        self._engines: dict[tuple, Callable[[Tensor], dict[str, Tensor]]] = {}

    def _engine(self, params: StyleParams) -> Callable[[Tensor], dict[str, Tensor]]:
        key = (params.weights, params.pooling, params.style_layers)
        if key not in self._engines:
            weights = load_weights(params.weights)
            if self.backend == "torch":
                features = VGGFeatures(weights, params.style_layers, params.pooling).to(self.device)
                self._engines[key] = lambda image: torch_style_targets(features, image, params.style_layers)
            else:
                path = self.root / "onnx" / f"targets-{model_key(weights, params.style_layers, params.pooling)}.onnx"
                if not path.is_file():
                    export_targets_model(weights, params.style_layers, params.pooling, path)
                    if self.notice:
                        self.notice(f"exported ONNX targets model {path}")
                engine = OnnxTargets.open(path, params.style_layers, self.providers, cache_root=self.root,
                                          allow_fallback=self.allow_fallback, notice=self.notice,
                                          device=self.device)
                self._engines[key] = engine
        return self._engines[key]

    def key(self, style: Path, params: StyleParams, content: Path | None = None) -> str:
        color = {"none": "", "luminance": "luminance"}.get(params.preserve_color)
        if color is None:  # histogram: the recoloured style depends on the content
            color = f"histogram:{self._hashes(content)}"
        return target_key(self._hashes(style), params.style_side(),
                          load_weights(params.weights).id, params.pooling, params.style_layers, color)

    def get(self, style: Path, params: StyleParams, content: Path | None = None) -> tuple[dict[str, Tensor], str]:
        """The target and where it came from: ``memory``, ``cache`` or ``computed``.
        ``content`` is needed with ``preserve_color: histogram``."""
        if params.preserve_color == "histogram" and content is None:
            raise UsageError("preserve_color histogram: the style target needs the content image")
        key = self.key(style, params, content)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key], "memory"
        grams = self.cache.load(key)
        source = "cache"
        if grams is not None and sorted(grams) != sorted(target_names(params.style_layers)):
            grams = None  # not what this version's targets hold: computed again, never misread
        if grams is None:
            side = params.style_side()
            image = to_tensor(load_image(style, side))
            check_image_size(*image.shape[-2:], params.style_layers, f"style image {style.name}")
            reference = (to_tensor(fit_image(load_image(content), *params.geometry))
                         if params.preserve_color == "histogram" else None)
            image = prepare_style(image, params, reference)
            grams = self._engine(params)(image.to(self.device))
            try:
                self.cache.save(key, grams, meta=f"{style.name} size={side} {params.pooling} "
                                                 f"{','.join(params.style_layers)} {params.weights}"
                                                 f" color={params.preserve_color}")
            except OSError as e:  # a full or read-only cache costs speed, not the job
                if self.notice:
                    self.notice(f"WARNING: could not cache the style target of {style.name}"
                                f" in {self.root} ({e.strerror or e}); going on without")
            self.computed += 1
            source = "computed"
        else:
            self.reused += 1
        grams = {name: g.to(self.device) for name, g in grams.items()}
        self._memory[key] = grams
        if len(self._memory) > self._memory_size:
            self._memory.popitem(last=False)
        return grams, source

    def for_job(self, job: Job) -> tuple[dict[str, Tensor], list[str]]:
        """The job's blended, scaled style targets, and where each style's came from."""
        if not job.params.style_layers:
            return {}, []
        parts, sources = [], []
        for style, weight in job.styles:
            if weight == 0:
                continue
            grams, source = self.get(style, job.params, job.content)
            parts.append((grams, weight))
            sources.append(source)
        return blend_targets(parts, job.params.feature_scale, self.device), sources


def distinct_targets(jobs: list[Job]) -> list[tuple[Path, StyleParams, Path]]:
    """One (style, params, content) per distinct style target the jobs need, in first-use
    order (the content matters only to ``preserve_color: histogram``)."""
    seen: dict[tuple, tuple[Path, StyleParams, Path]] = {}
    for job in jobs:
        if not job.params.style_layers:
            continue
        for style, weight in job.styles:
            p = job.params
            key = (str(style), p.style_side(), p.weights, p.pooling, p.style_layers, p.preserve_color,
                   str(job.content) if p.preserve_color == "histogram" else "")
            if weight and key not in seen:
                seen[key] = (style, p, job.content)
    return list(seen.values())
