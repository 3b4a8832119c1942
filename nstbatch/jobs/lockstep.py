"""Clips in lockstep: several clips' passes (``clip._ShotWork.needs``, generators that yield
each frame they need made and take its picture back) driven together, frame t of every clip
made in one optimisation pass, each frame pulled towards its own clip's style; a shot's first
frames in one pass, its later frames (from their warped starts, with their ties) in another,
since their schedules differ."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generator, Protocol

import numpy as np
import torch
from PIL import Image

from ..config import StyleParams
from ..engine.flow import Link
from ..engine.optimize import Memory, Result
from ..engine.regions import Regions
from ..engine.pixels import to_tensor
from ..engine.targets import StyleTarget
from ..engine.temporal import long_term_weights, warp, warped_start
from ..engine.vgg import VGGFeatures
from .single import Hooks, optimize_job


@dataclass
class Need:
    """A frame to make: its content, and for a frame after its shot's first the warped start
    and ties (``optimize``'s ``init`` and ``ties``)."""

    content: torch.Tensor  # (1, 3, H, W)
    start: torch.Tensor | None = None
    ties: list[tuple[torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=list)
    regions: Regions | None = None  # the frame's masks and their paintings (a clip with masks)


class Pass(Protocol):
    """One clip's pass over its frames, as ``drive`` takes it (``clip._ShotWork``)."""

    hooks: Hooks  # the loop's hooks; ``should_stop`` keeps the pass's claims alive
    style_targets: StyleTarget
    done: object  # its ``clip.ClipResult``: ``last`` and ``last_index`` say which pass made its last frame

    def needs(self) -> Generator[Need, torch.Tensor, list[int | None]]: ...


def drive(works: list[Pass], params: StyleParams, features: VGGFeatures | None = None,
          memory: Memory | None = None) -> list[list[int | None]]:
    """One pass over each clip (``Pass.needs``), their frames made together: at each round
    every clip's next frame to make, the shots' first frames in one pass and the later frames in
    another. Returns each clip's timestamps."""
    passes = [work.needs() for work in works]
    pts: list[list[int | None]] = [[] for _ in works]
    waiting: dict[int, Need] = {}

    def advance(i: int, image: torch.Tensor | None) -> None:
        try:
            waiting[i] = next(passes[i]) if image is None else passes[i].send(image)
        except StopIteration as end:
            waiting.pop(i, None)
            pts[i] = end.value

    def beat() -> bool:  # every clip's shot claim lives while the frames are made
        stop = [work.hooks.should_stop() for work in works]
        return any(stop)
    hooks = dataclasses.replace(works[0].hooks, should_stop=beat)
    try:
        for i in range(len(works)):
            advance(i, None)
        while waiting:
            for group in ([i for i, need in waiting.items() if need.start is None],
                          [i for i, need in waiting.items() if need.start is not None]):
                if group:
                    result = _optimize_group([waiting[i] for i in group], [works[i] for i in group], params,
                                             features, memory, hooks)
                    for k, i in enumerate(group):
                        works[i].done.last, works[i].done.last_index = result, k
                        advance(i, result.image[k:k + 1])
    finally:
        for each in passes:
            each.close()
    return pts


def _optimize_group(needs: list[Need], works: list[Pass], params: StyleParams, features: VGGFeatures | None,
                    memory: Memory | None, hooks: Hooks) -> Result:
    """Frames of several clips (or one) in one optimisation pass, each towards its own clip's
    style; later frames from their warped starts, tied where the flow is trusted (a clip with
    fewer ties than another gets ties of weight 0), in ``frame_steps``."""
    content = torch.cat([need.content for need in needs])
    targets = works[0].style_targets if len(works) == 1 else StyleTarget.stack([w.style_targets for w in works])
    regions = Regions.stack([need.regions for need in needs]) if needs[0].regions is not None else None
    if needs[0].start is None:
        return optimize_job(content, targets, params, features=features, hooks=hooks, memory=memory, regions=regions)
    count = max(len(need.ties) for need in needs)
    ties = []
    for j in range(count):
        pairs = [need.ties[j] if j < len(need.ties) else (need.start, torch.zeros_like(need.start[:, :1]))
                 for need in needs]
        ties.append((torch.cat([w for w, _ in pairs]), torch.cat([c for _, c in pairs])))
    later = dataclasses.replace(params, steps=params.frame_steps or params.steps)
    if params.frame_scales == "finest":  # the warped start is at the full size: no coarse pass to blur it
        later = dataclasses.replace(later, scales=(1.0,), scale_steps=(1.0,))
    return optimize_job(content, targets, later, features=features, init=torch.cat([need.start for need in needs]),
                        ties=tuple(ties), hooks=hooks, memory=memory, regions=regions)


def frame_need(rgb: np.ndarray, links: list[Link], outputs: dict[int, np.ndarray], index: int, device) -> Need:
    """One frame to make: alone (a shot's first), or from the previous output warped into it,
    tied to the earlier outputs where the flow is trusted."""
    content = to_tensor(Image.fromarray(rgb)).to(device)
    if not links:
        return Need(content)
    ties = _ties(links, outputs, index, device)
    return Need(content, warped_start(content, ties[0][0], links[0].weights.to(device)), ties)


def pass_need(rgb: np.ndarray, before: np.ndarray, links: list[Link], outputs: dict[int, np.ndarray], position: int,
              device) -> Need:
    """One frame of a pass after the first (``passes``; artistic-videos' multi-pass, its blend
    weight 1): from its picture of the pass before, ``before``, averaged with the neighbour this
    pass just made warped into it where the flow is trusted, ``(x' + c·ω(x_n)) / (1 + c)``, and
    tied to this pass's neighbours (``outputs`` and ``links`` by position in the pass's order)."""
    content = to_tensor(Image.fromarray(rgb)).to(device)
    previous = to_tensor(Image.fromarray(before)).to(device)
    if not links:
        return Need(content, previous)
    ties = _ties(links, outputs, position, device)
    trusted = links[0].weights.to(device)
    return Need(content, (previous + trusted * ties[0][0]) / (1 + trusted), ties)


def _ties(links: list[Link], outputs: dict[int, np.ndarray], at: int,
          device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The earlier outputs warped into frame ``at`` along its links, each with its long-term weight."""
    warped = [warp(to_tensor(Image.fromarray(outputs[at - link.distance])).to(device), link.backward.to(device))
              for link in links]
    return list(zip(warped, long_term_weights([link.weights.to(device) for link in links])))
