"""One job from its files, as ``run`` does it: the content at the output's size, the styles'
blended targets from the store, the loop, driven with the job's snapshots, checkpoints and
stop signal (``optimize_job``). The executor runs batches of these, ``nstbatch stylize`` and the
Python API one, and ``benchmarks/quality.py`` measures them: one path, so one job gives one
picture whichever door it comes through."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..config import StyleParams
from ..engine.devices import memory_available, resolve_device
from ..engine.optimize import Checkpoint, Memory, Progress, Result, Stylization
from ..engine.pixels import to_pil, to_tensor, to_uint16
from ..engine.regions import Regions
from ..engine.targets import StyleTarget
from ..engine.vgg import VGGFeatures
from ..engine.weights import load_weights
from ..errors import InputError
from ..fs import sha256_of
from ..io import webdataset
from ..io.hashing import NETWORK_OUTPUT_FIELDS
from ..io.manifest import LabelTable, RegionFiles
from ..io.images import (check_bit_depth, check_output_path, fit_image, icc_profile, load_image, load_labels,
                         probe_image, save_image)
from ..styles.store import StyleTargetStore, default_store
from ..version import __version__
from .memory import Estimate, plan_memory


def load_mask(path: Path, content: Path, params: StyleParams, size: tuple[int, int]) -> torch.Tensor:
    """A mask as its content is fitted, ``(1, 1, H, W)`` in [0, 1] (white: 1): drawn over the
    content (so first brought to the content's pixels), then scaled and cropped as the content
    is for the output (``params.geometry``), at the content's ``size`` (H, W)."""
    return _fitted_mask(load_image(path).convert("L"), content, params, size)


def _fitted_mask(mask: Image.Image, content: Path, params: StyleParams, size: tuple[int, int]) -> torch.Tensor:
    info = probe_image(content)
    if mask.size != (info.width, info.height):
        mask = mask.resize((info.width, info.height), Image.Resampling.BILINEAR)
    mask = fit_image(mask, *params.geometry)
    if mask.size != (size[1], size[0]):
        mask = mask.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255)[None, None]


def job_regions(content: Path, styles: Sequence[tuple[Path, float]], files: RegionFiles | None, params: StyleParams,
                pixels: torch.Tensor, store: StyleTargetStore) -> Regions | None:
    """A job's regions at its content's size (``pixels``): each mask with its own painting's
    target from ``store`` (one region with the styles' blend where only ``keep`` is given), and
    the keep mask; None for a job without them."""
    if files is None:
        return None
    size = tuple(pixels.shape[-2:])
    targets = region_targets(files, styles, params, content, max(size), store)
    if files.labels is not None:
        masks, keep = label_masks(files.labels, files.table, content, params, size)
        return Regions.of(masks, targets, keep)
    masks = (torch.cat([load_mask(path, content, params, size) for path in files.masks], 1) if files.masks
             else torch.ones(1, 1, *size))
    keep = load_mask(files.keep, content, params, size) if files.keep is not None else None
    return Regions.of(masks, targets, keep)


def region_targets(files: RegionFiles, styles: Sequence[tuple[Path, float]], params: StyleParams, content: Path,
                   side: int, store: StyleTargetStore) -> list:
    """Each region's painting's target at an output's long ``side``: its own painting's (its
    part of it, with ``style_masks``: region to region), or, where only ``keep`` is given, one
    region with the styles' blend. A still's and a clip's regions alike."""
    if files.style_masks:
        return [store.blend([(store.get_masked(style, mask, params, content, side), 1.0)], params)[0]
                for (style, _), mask in zip(styles, files.style_masks)]
    if files.masks or files.labels is not None:
        return [store.for_files([(style, 1.0)], params, content, side)[0] for style, _ in styles]
    return [store.for_files(styles, params, content, side)[0]]


def label_masks(path: Path, table: LabelTable, content: Path, params: StyleParams,
                size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A label image's regions as masks (``(1, R, H, W)``, one per painting of ``table``) and
    its keep mask (None: nothing named kept), each drawn white where its values are, at the
    label image's pixels, then fitted to the content as a drawn mask is (``load_mask``)."""
    labels = load_labels(path)
    named = table.named()

    def mask(where: np.ndarray) -> torch.Tensor:
        return _fitted_mask(Image.fromarray(where.astype(np.uint8) * 255), content, params, size)
    masks = [mask(np.isin(labels, values) | (~np.isin(labels, named) if r == table.default else False))
             for r, values in enumerate(table.paints)]
    keep = mask(np.isin(labels, table.keep)) if table.keep else None
    return torch.cat(masks, 1), keep


def init_image(params: StyleParams, height: int, width: int) -> torch.Tensor | None:
    """``params.init_file`` at the output's size (Lanczos), as ``optimize`` takes it as
    ``init``; None without one."""
    if not params.init_file:
        return None
    return to_tensor(load_image(params.init_file).resize((width, height), Image.Resampling.LANCZOS))


def load_content(path: Path, params: StyleParams) -> torch.Tensor:
    """The content file as the optimisation starts from it: ``(1, 3, H, W)`` at the output's size."""
    return to_tensor(fit_image(load_image(path), *params.geometry))


@dataclass
class Hooks:
    """What a job's caller hears from the loop and decides between its updates; every field may
    be left out."""

    on_step: Callable[[Progress], None] | None = None  # each reported step's costs (batch means)
    report_every: int = 1  # ...every N steps and the last (each report reads the device back)
    should_stop: Callable[[], bool] | None = None  # asked before each update: True raises Preempted
    checkpoint_every: int = 0  # hand ``on_checkpoint`` a checkpoint every N steps
    on_checkpoint: Callable[[Checkpoint], None] | None = None
    on_snapshot: Callable[[int, torch.Tensor], None] | None = None  # (step, image) every params.save_every


class Preempted(Exception):
    """The job stopped between two updates because ``should_stop`` said so; carries the
    checkpoint that continues it (``resume``)."""

    def __init__(self, checkpoint: Checkpoint):
        super().__init__(f"stopped after step {checkpoint.step}")
        self.checkpoint = checkpoint


def optimize_job(content: torch.Tensor, style_targets: StyleTarget, params: StyleParams, *,
                 features: VGGFeatures | None = None, init: torch.Tensor | None = None,
                 ties: tuple[tuple[torch.Tensor, torch.Tensor], ...] = (), regions: Regions | None = None,
                 resume: Checkpoint | None = None, hooks: Hooks | None = None,
                 memory: Memory | None = None) -> Result:
    """The loop for one job (or a batch of jobs), from its content at the output's size and its
    blended style targets (``StyleTargetStore``), driven between updates: a snapshot at each
    update that reaches or passes a multiple of ``params.save_every``, a checkpoint at each
    that reaches a multiple of ``hooks.checkpoint_every`` (neither after the last update, whose
    image is the result), and a stop, as ``Preempted``, when ``hooks.should_stop`` says so
    (asked before every update, the first included). Without ``init``, ``params.init_file`` is
    read here. ``memory``: activation checkpointing and the tiles a print is stepped in; by
    default as the memory check says, as ``run`` plans a job (``memory.plan_memory``)."""
    hooks = hooks or Hooks()
    if init is None:
        init = init_image(params, *content.shape[-2:])
    if memory is None:
        memory = planned_memory(params, content)
    style = regions if regions is not None else style_targets  # regions: a painting per part (regions.py)
    with Stylization(content, style, params, features=features, init=init,
                     ties=ties, resume=resume, on_step=hooks.on_step, report_every=hooks.report_every,
                     memory=memory) as run:
        for point in run:
            if hooks.on_snapshot is not None and point.passed(params.save_every):
                hooks.on_snapshot(point.step, run.image())
            if hooks.on_checkpoint is not None and point.passed(hooks.checkpoint_every):
                hooks.on_checkpoint(run.checkpoint())
            if hooks.should_stop is not None and hooks.should_stop():
                raise Preempted(run.checkpoint())
    return run.result()


def planned_memory(params: StyleParams, content: torch.Tensor) -> Memory:
    """What ``run``'s memory check gives a job of this size on the content's device."""
    limit = memory_available(content.device)
    return engine_memory(plan_memory(params, *content.shape[-2:], limit.bytes if limit else None,
                                     content.shape[0], content.device.type))


def engine_memory(plan: Estimate | None) -> Memory:
    """The engine's ``Memory`` of a memory plan: activation checkpointing and tiles as it
    planned them (no plan: the engine's own choice by size)."""
    return Memory() if plan is None else Memory(plan.checkpointing, plan.tile)


def provenance(params: StyleParams, result: Result, content: Path,
               styles: Sequence[tuple[Path, float]], index: int = 0) -> dict:
    """What made an output (image ``index`` of the result), stored inside it (PNG text chunks)."""
    final = result.final(index)
    return {
        "params": params.to_dict(),
        "weights": load_weights(params.weights).id,
        "content": content.name,
        "style": [[path.name, weight] for path, weight in styles] if len(styles) > 1 else styles[0][0].name,
        "final_cost": {"total": final.total, "content": final.content, "style": final.style,
                       "tv": final.tv},
        "version": {"nstbatch": __version__, "torch": torch.__version__},
    }


def network_provenance(params: StyleParams, network: Path, painting: str, content: Path) -> dict:
    """What made an output that a trained network painted, stored inside it: the output's form,
    the network (by its bytes) and the painting its row was trained on."""
    return {"params": {k: v for k, v in params.to_dict().items() if k in NETWORK_OUTPUT_FIELDS},
            "network": {"name": network.name, "sha256": sha256_of(network), "painting": painting},
            "content": content.name, "version": {"nstbatch": __version__, "torch": torch.__version__}}


def save_output(image: torch.Tensor, output: Path, params: StyleParams, metadata: dict, content: Path) -> None:
    """An output ``(1, 3, H, W)`` in [0, 1] as ``params`` asks (8 or 16 bits a channel, the
    JPEG or WebP quality), with the content's ICC profile and ``metadata`` (``provenance``)."""
    save_image(to_uint16(image) if params.bit_depth == 16 else to_pil(image), output, metadata,
               jpeg_quality=params.jpeg_quality, webp_quality=params.webp_quality, icc_profile=icc_profile(content))


def check_job_files(content: Path, styles: Sequence[tuple[Path, float]], output: Path,
                    params: StyleParams | None = None) -> None:
    """Everything about the files that can be known without decoding or running anything."""
    probe_image(content)
    for style, _ in styles:
        probe_image(style)
    check_output_path(output)
    if params is not None:
        check_bit_depth(output, params.bit_depth)
    for source in [content] + [style for style, _ in styles]:
        if output.resolve() == source.resolve() or (output.exists() and not webdataset.is_member(source)
                                                    and os.path.samefile(output, source)):
            raise InputError(f"{output}: the output is also an input; it would be overwritten",
                             hint="choose another output path")


def stylize_job(content: Path, styles: Sequence[tuple[Path, float]], params: StyleParams, *,
                device: str = "auto", features: VGGFeatures | None = None,
                store: StyleTargetStore | None = None, **optimize_options) -> Result:
    """One job from its files, as ``run`` does it: the content at the output's size, the
    styles' blended targets from ``store`` (and with ``regions=RegionFiles(...)`` its masks,
    ``job_regions``), the loop; nothing written."""
    target = resolve_device(device) if features is None else next(features.parameters()).device
    store = store or default_store(target)
    pixels = load_content(content, params)
    style_targets, _ = store.for_files(styles, params, content, max(pixels.shape[-2:]))
    regions = job_regions(content, styles, optimize_options.pop("regions", None), params, pixels, store)
    return optimize_job(pixels.to(target), style_targets, params, features=features, regions=regions,
                        **optimize_options)
