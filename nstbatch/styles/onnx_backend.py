"""Style targets through ONNX Runtime: export of ``TargetsGraph``, parity check, sessions.

Provider order is TensorRT → CUDA → CPU. ONNX Runtime quietly falls back to the CPU when a
GPU provider cannot start (onnxruntime-gpu lists CUDA as available even on machines without a
GPU), so after creating a session we compare what runs with what was asked for.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..version import __version__
from ..errors import NstbatchError, UsageError
from ..layers import channels
from ..engine.targets import PIXELS, TARGETS_FORMAT, Moments, StyleTarget, TargetsGraph, target_names
from ..engine.vgg import VGGFeatures
from ..engine.weights import Weights

OPSET = 17
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}
PARITY_SIZES = ((64, 64), (45, 71))  # a square and an odd, non-square size
PARITY_TOLERANCE = 1e-4


def onnxruntime():
    """``import onnxruntime``, lazily. The entry points (the CLI, a worker) import it first
    through ``environment.import_onnxruntime``, which keeps its telemetry file out of the
    temp folder; a library caller's process imports it as it is."""
    import onnxruntime as ort

    return ort


class OnnxError(NstbatchError):
    exit_code = 2



def model_key(weights: Weights, style_layers: Sequence[str], pooling: str,
              content_layers: Sequence[str] = ()) -> str:
    data = {"weights": weights.id, "style": list(style_layers), "content": list(content_layers),
            "pooling": pooling, "opset": OPSET, "nstbatch": __version__, "torch": torch.__version__,
            "targets": TARGETS_FORMAT}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


def relative_error(got: Tensor, expected: Tensor) -> float:
    """``max|got − expected| / max|expected|``: the error relative to the output's scale."""
    expected = expected.double()
    return float((got.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def parity(model_path: Path, graph: TargetsGraph, sizes=PARITY_SIZES) -> float:
    """Worst relative error of ONNX Runtime (CPU) against PyTorch over ``sizes`` and outputs."""
    ort = onnxruntime()

    session = ort.InferenceSession(str(model_path), _session_options(), providers=[PROVIDERS["cpu"]])
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for height, width in sizes:
        image = torch.rand(1, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = graph(image)
        got = session.run(None, {"image": image.numpy()})
        for g, e in zip(got, expected):
            worst = max(worst, relative_error(torch.from_numpy(g), e))
    return worst


def export_targets_model(weights: Weights, style_layers: Sequence[str], pooling: str,
                         path: str | os.PathLike, content_layers: Sequence[str] = ()) -> float:
    """Export ``TargetsGraph`` with dynamic height and width to ``path``, after checking it
    against PyTorch on two sizes; returns the worst relative error. Atomic: a failed check or
    a crash leaves no model at ``path``."""
    path = Path(path)
    features = VGGFeatures(weights, tuple(style_layers) + tuple(content_layers), pooling).cpu()
    graph = TargetsGraph(features, style_layers, content_layers).eval()
    names = graph.output_names
    dynamic = {"image": {2: "height", 3: "width"}}
    dynamic.update({n: {2: f"{n}_height", 3: f"{n}_width"} for n in names if n.startswith("act_")})
    return export_checked(graph, (torch.rand(1, 3, 64, 64),), path, (["image"], names, dynamic),
                          lambda tmp: parity(tmp, graph), PARITY_TOLERANCE,
                          "exported model disagrees with PyTorch: relative error", "use --targets torch and report this")


def export_checked(module: torch.nn.Module, inputs: tuple, path: Path, io_names: tuple[list, list, dict],
                   check: Callable[[Path], float], tolerance: float, disagrees: str, hint: str) -> float:
    """``module`` exported to ONNX (``io_names``: input names, output names, dynamic axes) and
    ``check``-ed against PyTorch before it goes to ``path``; returns the check's error. Atomic: a
    failed check or a crash leaves no model at ``path``; a check above ``tolerance`` raises
    ``OnnxError`` ("``disagrees`` E > tolerance", with ``hint``)."""
    input_names, output_names, dynamic = io_names
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter: the dynamo one needs onnxscript, which we do not ship.
            warnings.simplefilter("ignore")
            torch.onnx.export(module, inputs, tmp, dynamo=False, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True)
        error = check(Path(tmp))
        if not error < tolerance:
            raise OnnxError(f"{disagrees} {error:.2e} > {tolerance:g}", hint=hint)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return error
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_providers(spec: str = "auto", allow_fallback: bool = False) -> None:
    """Before any work: refuse GPU providers on a machine that has no GPU (ORT would quietly
    run them on the CPU). ``auto`` takes what there is and is never refused."""
    ort = onnxruntime()

    wanted = resolve_providers(spec)[0]
    if wanted == PROVIDERS["cpu"] or allow_fallback or _is_auto(spec):
        return
    if not torch.cuda.is_available():
        raise OnnxError(f"--providers {spec}: {wanted} needs a GPU, and none is visible here",
                        hint="use --providers cpu (or auto), or --allow-fallback to run on the CPU")
    if wanted not in ort.get_available_providers():
        raise OnnxError(f"--providers {spec}: this onnxruntime has no {wanted}"
                        f" (it has {', '.join(ort.get_available_providers())})",
                        hint="install onnxruntime-gpu, not onnxruntime")


def _is_auto(spec: str | None) -> bool:
    return (spec or "auto").strip().lower() == "auto"


def _tensorrt_installed() -> bool:
    """onnxruntime-gpu lists TensorRT whether or not its libraries are there; without them a
    session prints a page of errors before falling back, so ``auto`` asks first."""
    import ctypes.util

    if ctypes.util.find_library("nvinfer"):
        return True
    try:
        import tensorrt  # noqa: F401
        return True
    except ImportError:
        return False


def resolve_providers(spec: str = "auto") -> list[str]:
    """``auto``: TensorRT → CUDA → CPU, each where this machine has it (a GPU that torch sees,
    the provider in this onnxruntime, TensorRT's libraries); or a comma list, taken as is."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        names = ["cpu"]
        if torch.cuda.is_available():
            ort = onnxruntime()

            available = ort.get_available_providers()
            names = [n for n in ("tensorrt", "cuda") if PROVIDERS[n] in available
                     and (n != "tensorrt" or _tensorrt_installed())] + names
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        unknown = [n for n in names if n not in PROVIDERS]
        if unknown or not names:
            raise UsageError(f"unknown ONNX Runtime provider(s) {', '.join(unknown) or spec!r}",
                             hint=f"use auto or a comma list of {', '.join(PROVIDERS)}")
    return [PROVIDERS[n] for n in names]


def _session_options():
    ort = onnxruntime()

    options = ort.SessionOptions()
    options.log_severity_level = 3  # a failed GPU provider is our message to give, not ORT's
    # Targets are computed once per style, at sizes that vary: ORT's CPU arena and memory
    # pattern would keep the largest size's intermediates (9 GiB for a 4000 px style) for the
    # rest of the worker's life, on top of the optimisation's own peak. Without them the
    # memory goes back after each target, for about 8 % more time on that one pass.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    return options


def _cuda_index(device) -> int:
    device = torch.device(device)
    return (device.index or 0) if device.type == "cuda" else 0


def _trt_cache_dir(cache_root: Path, device) -> Path:
    ort = onnxruntime()

    gpu = torch.cuda.get_device_name(_cuda_index(device)) if torch.cuda.is_available() else "nogpu"
    try:
        import tensorrt
        trt = tensorrt.__version__
    except ImportError:
        trt = "trt"
    tag = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{gpu}-ort{ort.__version__}-{trt}")
    return cache_root / "tensorrt" / tag


def open_session(model_path: Path, providers: str = "auto", *, cache_root: Path | None = None,
                 allow_fallback: bool = False, notice: Callable[[str], None] | None = None, device="cpu",
                 what: str = "style targets"):
    """An ONNX Runtime session over ``model_path`` with ``providers`` (``resolve_providers``)
    on ``device``'s GPU, and the provider that actually runs: a GPU provider that did not start
    is refused (``allow_fallback`` or ``auto``: said through ``notice``, ``what`` naming the
    work that runs on the CPU instead)."""
    ort = onnxruntime()

    wanted = resolve_providers(providers)
    device_id = _cuda_index(device)
    options = []
    for name in wanted:
        if name == PROVIDERS["tensorrt"]:
            trt_dir = _trt_cache_dir(cache_root or model_path.parent, device)
            trt_dir.mkdir(parents=True, exist_ok=True)
            options.append((name, {"device_id": device_id, "trt_fp16_enable": False,
                                   "trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_dir),
                                   "trt_timing_cache_enable": True, "trt_timing_cache_path": str(trt_dir)}))
        elif name == PROVIDERS["cuda"]:
            options.append((name, {"device_id": device_id}))
        else:
            options.append(name)
    try:
        session = ort.InferenceSession(str(model_path), _session_options(), providers=options)
    except Exception as e:  # noqa: BLE001 - ORT raises plain RuntimeErrors with long texts
        raise OnnxError(f"ONNX Runtime could not open {model_path} with {', '.join(wanted)}:"
                        f" {str(e).splitlines()[0][:300]}") from None
    running = session.get_providers()
    if wanted[0] not in running:
        message = (f"ONNX Runtime did not start {wanted[0]} (asked for: {', '.join(wanted)};"
                   f" running: {', '.join(running)})")
        if not (allow_fallback or _is_auto(providers)):
            raise OnnxError(message, hint="check the GPU, CUDA and onnxruntime-gpu, use "
                                          "--providers cpu, or --allow-fallback to run anyway")
        if notice:
            notice(f"WARNING: {message}; {what} are computed on {running[0]}")
    elif running[0] == PROVIDERS["cpu"] and _is_auto(providers) and torch.cuda.is_available() and notice:
        notice(f"WARNING: {what} run on ONNX Runtime's CPU provider: this onnxruntime has"
               " no GPU provider (install onnxruntime-gpu for the GPU)")
    return session, running[0]


@dataclass
class OnnxTargets:
    """A session over an exported targets model: image → a ``targets.StyleTarget``."""

    session: object
    style_layers: tuple[str, ...]
    provider: str  # the one actually running

    @classmethod
    def open(cls, model_path: Path, style_layers: Sequence[str], providers: str = "auto", *,
             cache_root: Path | None = None, allow_fallback: bool = False,
             notice: Callable[[str], None] | None = None, device="cpu") -> "OnnxTargets":
        """A session on ``device``'s GPU for the CUDA and TensorRT providers (each worker
        passes its own: ``cuda:1`` runs on GPU 1, whatever torch's current device is)."""
        session, running = open_session(model_path, providers, cache_root=cache_root, allow_fallback=allow_fallback,
                                        notice=notice, device=device, what="style targets")
        return cls(session, tuple(style_layers), running)

    def __call__(self, image: Tensor) -> StyleTarget:
        if image.is_cuda and self.provider != PROVIDERS["cpu"]:
            return self._run_bound(image)
        outputs = self.session.run(None, {"image": image.detach().cpu().float().numpy()})
        return StyleTarget.from_tensors({name: torch.from_numpy(out)
                                         for name, out in zip(target_names(self.style_layers), outputs)},
                                        self.style_layers)

    def _run_bound(self, image: Tensor) -> StyleTarget:
        """On a GPU: bind input and outputs to torch's device memory, so the targets never
        leave the device on their way to the PyTorch loop."""
        image = image.detach().float().contiguous()
        binding = self.session.io_binding()
        index = image.device.index or 0
        binding.bind_input("image", "cuda", index, np.float32, tuple(image.shape), image.data_ptr())
        outputs = {}
        for name in self.style_layers + (PIXELS,):
            c = 3 if name == PIXELS else channels(name)
            second = torch.empty((1, c, c), dtype=torch.float32, device=image.device)
            binding.bind_output(f"gram_{name}", "cuda", index, np.float32, (1, c, c), second.data_ptr())
            mean = torch.empty((1, c), dtype=torch.float32, device=image.device)
            binding.bind_output(f"mean_{name}", "cuda", index, np.float32, (1, c), mean.data_ptr())
            outputs[name] = Moments(mean, second)
        torch.cuda.current_stream(image.device).synchronize()
        self.session.run_with_iobinding(binding)
        pixels = outputs.pop(PIXELS)
        return StyleTarget(outputs, pixels)



@dataclass
class Artifact:
    model: Path
    error: float  # worst relative error against PyTorch
    provider: str  # the provider a session on it runs with here


def build_artifacts(params, out: str | os.PathLike, providers: str = "auto") -> Artifact:
    """Export the targets model for ``params``' weights, style layers and pooling into ``out``
    and open a session on it, which with TensorRT builds and caches its engine in ``out``."""
    from ..engine.weights import load_weights

    weights = load_weights(params.weights)
    out = Path(out)
    model = out / f"targets-{model_key(weights, params.style_layers, params.pooling)}.onnx"
    error = export_targets_model(weights, params.style_layers, params.pooling, model)
    session = OnnxTargets.open(model, params.style_layers, providers, cache_root=out)
    if session.provider == PROVIDERS["tensorrt"]:
        session(torch.rand(1, 3, 256, 256, device="cuda"))  # the first run builds the engine
    return Artifact(model, error, session.provider)
