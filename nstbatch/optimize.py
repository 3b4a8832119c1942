"""The optimisation loop: pixels of the generated image, costs from ``losses``, features from
``vgg``. Tensors in, tensors out; progress goes to a callback, never to a file or the screen."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from . import losses
from .config import StyleParams
from .errors import OptimizationError
from .vgg import VGGFeatures, check_image_size
from .weights import load_weights


@dataclass(frozen=True)
class Progress:
    """Costs of the image after ``step`` updates (step 0: the initial image); batch means."""

    step: int
    steps: int
    content: float
    style: float
    tv: float
    total: float


@dataclass
class Result:
    image: Tensor  # (N, 3, H, W) in [0, 1]
    history: list[Progress] = field(default_factory=list)


@dataclass(frozen=True)
class Targets:
    """What the generated image is pulled towards, computed once per job."""

    content: dict[str, Tensor]  # layer -> activation of the content image, (N, C, H, W)
    style_grams: dict[str, Tensor]  # layer -> Gram matrix of the style image, (1, C, C)


def build_features(params: StyleParams, device: torch.device | str = "cpu") -> VGGFeatures:
    """The VGG-19 that ``params`` asks for, truncated after its deepest layer, on ``device``."""
    weights = load_weights(params.weights)
    return VGGFeatures(weights, params.feature_layers, params.pooling).to(device)


def _scaled(features: VGGFeatures, image: Tensor, layers, scale: float) -> dict[str, Tensor]:
    return {name: a * scale for name, a in features(image, layers).items()}


def compute_targets(features: VGGFeatures, content: Tensor, style: Tensor,
                    params: StyleParams) -> Targets:
    check_image_size(*content.shape[-2:], params.feature_layers, "content image")
    check_image_size(*style.shape[-2:], params.style_layers, "style image")
    with torch.no_grad():
        content_acts = (_scaled(features, content, params.content_layers, params.feature_scale)
                        if params.content_layers else {})
        style_acts = (_scaled(features, style, params.style_layers, params.feature_scale)
                      if params.style_layers else {})
    return Targets(content_acts, {name: losses.gram_matrix(a) for name, a in style_acts.items()})


def initial_image(content: Tensor, params: StyleParams) -> Tensor:
    """The seed's init is content + U(−noise, noise), clipped; noise comes from a CPU generator
    seeded by ``params.seed`` so a seed gives the same start on every device."""
    generator = torch.Generator().manual_seed(params.seed)
    if params.init == "content":
        return content.clone()
    uniform = torch.rand(content.shape, generator=generator, dtype=torch.float32).to(content)
    if params.init == "noise":
        return uniform
    return (content + (2 * uniform - 1) * params.noise).clamp(0, 1)


def costs(features: VGGFeatures, image: Tensor, targets: Targets, params: StyleParams):
    """``(total, content, style, tv)``, each of shape ``(N,)``."""
    acts = _scaled(features, image, params.feature_layers, params.feature_scale)
    zero = image.new_zeros(image.shape[0], dtype=torch.float32)
    j_content = (losses.content_cost_layers(targets.content, acts, params.content_layers,
                                            params.content_norm)
                 if params.content_layers else zero)
    j_style = (losses.style_cost(targets.style_grams, acts,
                                 dict(zip(params.style_layers, params.style_layer_weights)))
               if params.style_layers else zero)
    j_tv = losses.tv_cost(image) if params.tv_weight else zero
    total = losses.total_cost(j_content, j_style, params.content_weight, params.style_weight,
                              j_tv, params.tv_weight)
    return total, j_content, j_style, j_tv


def _progress(step: int, params: StyleParams, parts) -> Progress:
    total, content, style, tv = (float(p.detach().mean()) for p in parts)
    if not torch.isfinite(torch.tensor(total)):
        raise OptimizationError(f"the cost became {total} at step {step}",
                                hint=f"lower the learning rate (lr={params.lr:g})")
    return Progress(step, params.steps, content, style, tv, total)


def optimize(content: Tensor, style: Tensor, params: StyleParams, *,
             features: VGGFeatures | None = None,
             callback: Callable[[Progress], None] | None = None) -> Result:
    """Stylize ``content`` ``(N, 3, H, W)`` with ``style`` ``(1, 3, h, w)``, both in [0, 1].

    Runs ``params.steps`` updates of Adam or L-BFGS over the pixels, clipping them to [0, 1]
    after each; returns the image and the costs after every step (step 0 included).
    """
    if features is None:
        features = build_features(params, content.device)
    device = next(features.parameters()).device
    content, style = content.to(device), style.to(device)
    targets = compute_targets(features, content, style, params)
    image = initial_image(content, params).requires_grad_(True)
    history: list[Progress] = []

    def record(step: int, parts) -> None:
        history.append(_progress(step, params, parts))
        if callback is not None:
            callback(history[-1])

    if params.optimizer == "adam":
        optimizer = torch.optim.Adam([image], lr=params.lr)
        for step in range(params.steps):
            optimizer.zero_grad(set_to_none=True)
            parts = costs(features, image, targets, params)
            parts[0].sum().backward()  # images of a batch are independent: their sum is safe
            record(step, parts)
            optimizer.step()
            with torch.no_grad():
                image.clamp_(0, 1)
    else:
        # One L-BFGS iteration per .step() call (the history persists between calls), so
        # progress and clipping happen per iteration as with Adam.
        optimizer = torch.optim.LBFGS([image], lr=params.lr, max_iter=1, history_size=50,
                                      line_search_fn="strong_wolfe")
        for step in range(params.steps):
            evaluations = []

            def closure():
                optimizer.zero_grad(set_to_none=True)
                parts = costs(features, image, targets, params)
                parts[0].sum().backward()
                evaluations.append(parts)
                return parts[0].sum()

            optimizer.step(closure)
            record(step, evaluations[0])
            with torch.no_grad():
                image.clamp_(0, 1)
    with torch.no_grad():
        record(params.steps, costs(features, image, targets, params))
    return Result(image.detach(), history)
