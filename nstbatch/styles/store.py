"""Style targets for jobs: from the cache, or computed once (ONNX Runtime or PyTorch) and
cached. Every door takes its targets from here: ``run``, ``stylize`` (the command and the Python
API) and ``precompute``, so one job gets one picture whichever door it comes through."""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .cache import TargetCache
from ..environment import cache_root
from ..engine.color import prepare_style
from ..config import StyleParams
from ..errors import UsageError
from ..geometry import long_side_size
from ..io.images import fit_image, load_image, resize_long_side, to_rgb
from ..engine.pixels import resize_tensor, to_tensor
from ..io.manifest import Job
from .onnx_backend import OnnxTargets, check_providers, export_targets_model, model_key
from ..io.hashing import FileHashes, pixels_digest
from ..engine.regions import guided_target
from ..engine.targets import StyleTarget, blend_targets, target_key, torch_style_targets
from ..engine.vgg import VGGFeatures, check_image_size
from ..engine.weights import load_weights

BACKENDS = ("onnx", "torch")


class StyleTargetStore:
    """``get(style, params)`` → an unscaled ``targets.StyleTarget`` (per-position channel means
    and second moments), computing each distinct target at most once per cache (and
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
        self._memory: OrderedDict[str, StyleTarget] = OrderedDict()
        self._memory_size = memory
        self._engines: dict[tuple, Callable[[Tensor], StyleTarget]] = {}

    def _engine(self, params: StyleParams) -> Callable[[Tensor], StyleTarget]:
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

    def key(self, style: Path, params: StyleParams, content: Path | None = None,
            output_side: int | None = None) -> str:
        return self._key(self._hashes(style), params, lambda: self._hashes(content), output_side)

    def _key(self, style_digest: str, params: StyleParams, content_digest: Callable[[], str],
             output_side: int | None) -> str:
        color = {"none": "", "luminance": "luminance"}.get(params.preserve_color)
        if color is None:  # histogram: the recoloured style depends on the content (hashed for it alone)
            color = f"histogram:{content_digest()}"
        return target_key(style_digest, params.style_side(output_side), load_weights(params.weights).id,
                          params.pooling, params.style_layers, color)

    def get(self, style: Path, params: StyleParams, content: Path | None = None,
            output_side: int | None = None) -> tuple[StyleTarget, str]:
        """The target of the style file for an output whose long side is ``output_side``
        (default ``size``), and where it came from: ``memory``, ``cache`` or ``computed``.
        ``content`` is needed with ``preserve_color: histogram``."""
        return self._file_target(style, params, content, output_side, self.key(style, params, content, output_side),
                                 style.name)

    def get_masked(self, style: Path, mask: Path, params: StyleParams, content: Path | None = None,
                   output_side: int | None = None) -> tuple[StyleTarget, str]:
        """As ``get``, for the part of the painting ``mask`` covers (white; drawn over the
        painting, any size of its shape): a region's target, region to region
        (``regions.guided_target``). Computed by PyTorch (the ONNX targets model takes no mask),
        cached under the mask's bytes too."""
        plain = self.key(style, params, content, output_side)
        key = hashlib.sha256(f"{plain}:{self._hashes(mask)}".encode()).hexdigest()

        def guided(image: Tensor) -> StyleTarget:
            drawn = load_image(mask).convert("L").resize(image.shape[-1:-3:-1], Image.Resampling.BILINEAR)
            weights = torch.from_numpy(np.asarray(drawn, dtype=np.float32) / 255)[None, None].to(image.device)
            return guided_target(self._torch_features(params), image, weights, params.style_layers)
        return self._file_target(style, params, content, output_side, key, f"{style.name} under {mask.name}", guided)

    def _file_target(self, style: Path, params: StyleParams, content: Path | None, output_side: int | None,
                     key: str, name: str, engine: Callable[[Tensor], StyleTarget] | None = None):
        """``get``'s and ``get_masked``'s target of a style file under ``key`` (``_target``)."""
        if params.preserve_color == "histogram" and content is None:
            raise UsageError("preserve_color histogram: the style target needs the content image")

        def at_side(side: int) -> Tensor:
            return to_tensor(load_image(style, side))

        def reference() -> Tensor:
            return to_tensor(fit_image(load_image(content), *params.geometry))
        return self._target(key, at_side, name, params, output_side, reference, engine)

    def _torch_features(self, params: StyleParams) -> VGGFeatures:
        key = ("features", params.weights, params.pooling, params.style_layers)
        if key not in self._engines:
            self._engines[key] = VGGFeatures(load_weights(params.weights), params.style_layers,
                                             params.pooling).to(self.device)
        return self._engines[key]

    def get_image(self, style: Image.Image | Tensor, params: StyleParams,
                  content: Image.Image | Tensor | None = None,
                  output_side: int | None = None) -> tuple[StyleTarget, str]:
        """As ``get``, for a style image in memory (the Python API's): a Pillow image, resized
        as a file's is, or a tensor ``(1, 3, h, w)`` in [0, 1], resized by ``resize_tensor``.
        ``content``, with ``histogram``: the content as the output will be."""
        if params.preserve_color == "histogram" and content is None:
            raise UsageError("preserve_color histogram: the style target needs the content image")
        key = self._key(pixels_digest(style), params, lambda: pixels_digest(content), output_side)
        if isinstance(style, Tensor):
            def at_side(side: int) -> Tensor:
                return resize_tensor(style.float().cpu(), long_side_size(*style.shape[:-3:-1], side)[::-1])
        else:
            def at_side(side: int) -> Tensor:
                return to_tensor(resize_long_side(to_rgb(style), side))
        reference = content if isinstance(content, Tensor) or content is None else to_tensor(content)
        return self._target(key, at_side, "in memory", params, output_side, lambda: reference)

    def _target(self, key: str, at_side: Callable[[int], Tensor], name: str, params: StyleParams,
                output_side: int | None, reference: Callable[[], Tensor],
                engine: Callable[[Tensor], StyleTarget] | None = None) -> tuple[StyleTarget, str]:
        """The target under ``key``: from memory, the cache, or computed from ``at_side(side)``,
        the style image ``(1, 3, h, w)`` at its long side (``reference()``: the content, for
        ``preserve_color: histogram``)."""
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key], "memory"
        target = self._cached(key, params)
        source = "cache"
        if target is None:
            side = params.style_side(output_side)
            image = at_side(side)
            check_image_size(*image.shape[-2:], params.style_layers, f"style image {name}")
            image = prepare_style(image, params, reference() if params.preserve_color == "histogram" else None)
            target = (engine or self._engine(params))(image.to(self.device))
            try:
                self.cache.save(key, target.tensors(), meta=f"{name} size={side} {params.pooling} "
                                                 f"{','.join(params.style_layers)} {params.weights}"
                                                 f" color={params.preserve_color}")
            except OSError as e:  # a full or read-only cache costs speed, not the job
                if self.notice:
                    self.notice(f"WARNING: could not cache the style target of {name}"
                                f" in {self.root} ({e.strerror or e}); going on without")
            self.computed += 1
            source = "computed"
        else:
            self.reused += 1
        target = target.to(self.device)
        self._memory[key] = target
        if len(self._memory) > self._memory_size:
            self._memory.popitem(last=False)
        return target, source

    def _cached(self, key: str, params: StyleParams) -> StyleTarget | None:
        """The cache's entry under ``key``, if it holds what this version's targets hold for
        ``params.style_layers`` (otherwise it is computed again, never misread)."""
        tensors = self.cache.load(key)
        try:
            return None if tensors is None else StyleTarget.from_tensors(tensors, params.style_layers)
        except (KeyError, ValueError):
            return None

    def for_job(self, job: Job, output_side: int | None = None) -> tuple[StyleTarget, list[str]]:
        """The job's blended, scaled style targets, and where each style's came from."""
        return self.for_files(job.styles, job.params, job.content, output_side)

    def for_files(self, styles: Sequence[tuple[Path, float]], params: StyleParams, content: Path,
                  output_side: int | None = None) -> tuple[StyleTarget, list[str]]:
        """As ``for_job``, for styles (path, weight) and a content file (``get``)."""
        if not params.style_layers:
            return StyleTarget({}), []
        return self.blend([(self.get(style, params, content, output_side), weight)
                           for style, weight in styles if weight], params)

    def for_images(self, styles: Sequence[tuple[Image.Image | Tensor, float]], params: StyleParams,
                   content: Image.Image | Tensor | None = None,
                   output_side: int | None = None) -> tuple[StyleTarget, list[str]]:
        """As ``for_job``, for decoded images (``get_image``)."""
        if not params.style_layers:
            return StyleTarget({}), []
        return self.blend([(self.get_image(style, params, content, output_side), weight)
                           for style, weight in styles if weight], params)

    def blend(self, parts, params: StyleParams) -> tuple[StyleTarget, list[str]]:
        """``((target, source), weight)`` pairs -> the blended, scaled target and the sources."""
        targets = blend_targets([(target, weight) for (target, _), weight in parts], params.feature_scale,
                                self.device)
        return targets, [source for (_, source), _ in parts]


_STORES: dict[str, StyleTargetStore] = {}


def default_store(device: torch.device) -> StyleTargetStore:
    """The process's style targets on ``device`` as ``run`` computes them by default: ONNX
    Runtime, cached under ``NSTBATCH_CACHE``."""
    if str(device) not in _STORES:
        _STORES[str(device)] = StyleTargetStore(device=device)
    return _STORES[str(device)]
