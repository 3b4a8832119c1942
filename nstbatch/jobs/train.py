"""Training a transform network from files (``engine/transform.py``): the user's photos and
paintings read as a run reads them, the engine's criterion of ``params`` as the loss, a
checkpoint in the state directory every ``spec.checkpoint_every`` steps and on a stop (a stopped
training resumes to the weights an unbroken one reaches), held-out photos scored with the
yardstick as it trains, and at the end the ONNX model with its card beside it
(``nets/NAME.onnx`` and ``nets/NAME.json``): a model without its card is not a result.

The network learns at the scale it will paint at: photos are read with their long side at the
run's ``size`` (``spec.side``) and the painting's target is the one a run of that size uses, so a
``train_size`` crop is a window of the picture as the run will see it, and a brush stroke is as
many pixels wide in training as in the run's pictures (a crop of a photo shrunk to twice the
crop, against a painting shrunk to the crop, taught strokes two to four times too small for a
512 px run).

A photo that cannot be read is left out with its reason, and the training goes on with the
rest; a painting that cannot be read stops it before any work (the network is that painting's).
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config import StyleParams
from ..errors import InputError, NstbatchError, UsageError
from ..fs import atomic_write, sha256_of, write_json
from ..io import webdataset
from ..io.images import load_image, probe_image
from ..version import __version__
from ..engine.pixels import to_tensor
from ..engine.transform import Shape, Training, TrainingCosts, TransformNet, stylize
from ..engine.vgg import VGGFeatures, build_features
from ..engine.yardstick import Yardstick
from ..styles.networks import export_network
from ..styles.store import StyleTargetStore

CARD_FORMAT = 1
_NOT_IN_KEY = ("photos", "paintings", "network", "params", "checkpoint_every", "score_every", "score_size")


@dataclass(frozen=True)
class TrainSpec:
    """What a network is trained from and how; its digest (``key``) names its checkpoint."""

    photos: tuple[Path, ...]  # the training images; every ``held_out_every``-th is held out
    paintings: tuple[Path, ...]  # one, or a pool: one row of the network each
    network: Path  # the ONNX model to write; its card is the same name in .json
    params: StyleParams  # the criterion: the preset's costs, layers and weights
    size: int = 256  # random crops' side
    side: int = 512  # the long side the network will paint at: photos and painting are seen at it
    steps: int = 2000
    batch: int = 4
    lr: float = 1e-3
    seed: int = 0
    width: int = 32  # the network's first channels (Johnson: 32)
    blocks: int = 5
    held_out_every: int = 10  # one photo in this many is held out (at least one of two or more)
    # When, not what: none of these changes the weights, so none is in the key.
    checkpoint_every: int = 100  # a checkpoint every N steps (and on a stop)
    score_every: int = 0  # score the held-out photos every N steps (0: at the end only)
    score_size: int = 512  # the yardstick's size

    def key(self, digests: dict[Path, str]) -> str:
        """A digest of everything the weights depend on: the readable files' contents (by
        ``digests``), not their names."""
        data = {**{k: v for k, v in asdict(self).items() if k not in _NOT_IN_KEY},
                "photos": [digests[p] for p in self.photos if p in digests],
                "paintings": [digests[p] for p in self.paintings],
                "params": repr(self.params)}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainProgress:
    """After ``step`` of ``steps`` updates: the batch's costs and crops per second so far."""

    step: int
    steps: int
    costs: TrainingCosts
    images_per_second: float


@dataclass
class TrainResult:
    network: Path
    card: Path | None  # None: stopped before the end (the checkpoint waits)
    step: int
    skipped: list[str] = field(default_factory=list)  # photos left out, each with its reason
    curve: list[dict] = field(default_factory=list)  # the held-out yardstick as it trained
    already: bool = False  # the network and its card were there, trained from these very files and settings
    paintings: list[str] = field(default_factory=list)  # the rows' paintings, by file name


def split_photos(photos: Sequence[Path], every: int) -> tuple[list[Path], list[Path]]:
    """(training, held out): every ``every``-th photo held out, at least one where there are
    two or more, never all."""
    held = [p for i, p in enumerate(photos) if i % every == every - 1]
    if not held and len(photos) >= 2:
        held = [photos[-1]]
    return [p for p in photos if p not in held], held


def train_network(spec: TrainSpec, state_dir: Path, *, device: str | torch.device = "cpu",
                  features: VGGFeatures | None = None, yardstick_net: VGGFeatures | None = None,
                  on_step: Callable[[TrainProgress], None] | None = None,
                  should_stop: Callable[[], bool] | None = None, notice: Callable[[str], None] | None = None,
                  command: str = "") -> TrainResult:
    """Train ``spec``'s network, from its checkpoint under ``state_dir`` where there is one;
    score the held-out photos as ``spec`` says; stop (checkpointed) when ``should_stop`` says
    so. Writes the model and its card when the last step is done."""
    notice = notice or (lambda message: None)
    device = torch.device(device)
    for painting in spec.paintings:
        load_image(painting)  # unreadable: an InputError naming it, before any work
    digests = {path: sha256_of(path) for path in (*spec.paintings,)}
    photos, skipped = _read_photos(spec.photos, spec.side, digests)
    for reason in skipped:
        notice(f"left out of the training: {reason}")
    training_paths, held_paths = split_photos([p for p in spec.photos if p in photos], spec.held_out_every)
    if not training_paths:
        raise InputError(f"{spec.network}: no photo to train on ({len(skipped)} could not be read)",
                         hint="give the training readable photos (a dataset folder or a list of files)")
    key, names = spec.key(digests), [painting.name for painting in spec.paintings]
    if (already := _trained(spec, key)) is not None:
        return TrainResult(spec.network, already, spec.steps, skipped, [], already=True, paintings=names)
    notice(f"training {spec.network.name}: {len(training_paths)} photo(s), {len(held_paths)} held out,"
           f" {len(spec.paintings)} painting(s), {spec.steps} steps of {spec.batch} crops at {spec.size} px"
           + (f" (half of them moved twins of the others, tied at temporal_weight {spec.params.temporal_weight})"
              if spec.params.temporal_weight else ""))
    features = features or build_features(spec.params, device)
    store = StyleTargetStore(backend="torch", device=device)
    targets = [store.for_files([(painting, 1.0)], spec.params, training_paths[0], spec.side)[0]
               for painting in spec.paintings]
    torch.manual_seed(spec.seed)  # the network's initial weights
    net = TransformNet(Shape(len(spec.paintings), spec.width, spec.blocks)).to(device)
    training = Training(net, features, spec.params, targets, size=spec.size, batch=spec.batch, lr=spec.lr,
                        seed=spec.seed)
    checkpoint = Path(state_dir) / "train" / f"{spec.network.stem}-{key}.pt"
    curve: list[dict] = []
    earlier = 0.0  # seconds the runs before this one trained
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=True)
        training.load_state_dict(saved["training"])
        curve, earlier = json.loads(saved["curve"]), float(saved["seconds"])
        notice(f"resuming {spec.network.name}'s training at step {training.step} of {spec.steps}")
    train_photos = [photos[p] for p in training_paths]
    scorer = _Scorer([photos[p] for p in held_paths], spec, yardstick_net) if held_paths else None
    started, first_step = time.monotonic(), training.step
    while training.step < spec.steps:
        if should_stop is not None and should_stop():
            _save(checkpoint, training, curve, earlier + time.monotonic() - started)
            return TrainResult(spec.network, None, training.step, skipped, curve, paintings=names)
        costs = training(train_photos)
        if on_step is not None:
            rate = (training.step - first_step) * spec.batch / max(time.monotonic() - started, 1e-9)
            on_step(TrainProgress(training.step, spec.steps, costs, rate))
        scoring = spec.score_every and training.step % spec.score_every == 0
        if scorer is not None and scoring and training.step < spec.steps:
            curve.append({"step": training.step, **scorer(net)})
        if training.step % spec.checkpoint_every == 0 and training.step < spec.steps:
            _save(checkpoint, training, curve, earlier + time.monotonic() - started)
    if scorer is not None:
        curve.append({"step": training.step, **scorer(net)})
    export_network(net, spec.network)
    card = _write_card(spec, key, digests, (training_paths, held_paths, skipped), curve, command,
                       earlier + time.monotonic() - started)
    checkpoint.unlink(missing_ok=True)
    return TrainResult(spec.network, card, training.step, skipped, curve, paintings=names)


def _read_photos(paths: Sequence[Path], longest: int, digests: dict[Path, str]):
    """Each readable photo as ``(1, 3, H, W)``, its long side at most ``longest``; and why each
    other one was left out."""
    photos, skipped = {}, []
    for path in paths:
        try:
            info = probe_image(path)
            photos[path] = to_tensor(load_image(path, min(longest, max(info.width, info.height))))
            digests[path] = _digest(path)
        except (OSError, NstbatchError) as e:
            skipped.append(f"{path}: {getattr(e, 'strerror', None) or e}")
    return photos, skipped


def _digest(path: Path) -> str:
    """A photo's sha256: a file's, or a WebDataset shard member's bytes."""
    if webdataset.is_member(path):
        return webdataset.sha256(path)
    return sha256_of(path)


class _Scorer:
    """The held-out photos stylized by the network and scored with the yardstick against each
    painting, at the yardstick's size: the means over photos and paintings and, for a pool, each
    painting's own (``paintings``: every output against the painting its row paints)."""

    def __init__(self, photos: list[torch.Tensor], spec: TrainSpec, net: VGGFeatures | None):
        paintings = [to_tensor(load_image(p)) for p in spec.paintings]
        self.photos = photos
        self.yardsticks = [[Yardstick(photo, painting, spec.score_size, net) for painting in paintings]
                           for photo in photos]

    def __call__(self, net: TransformNet) -> dict:
        device = next(net.parameters()).device
        rows: list[list] = [[] for _ in self.yardsticks[0]]  # each painting's scores
        for photo, yardsticks in zip(self.photos, self.yardsticks):
            for row, yardstick in enumerate(yardsticks):
                image = stylize(net, photo.to(device), torch.tensor([row], device=device)).cpu()
                rows[row].append(yardstick(image))
        figures = _means([score for scores in rows for score in scores])
        return {**figures, "paintings": [_means(scores) for scores in rows]} if len(rows) > 1 else figures


def _means(scores: list) -> dict:
    return {"style": round(sum(s.style for s in scores) / len(scores), 4),
            "content": round(sum(s.content for s in scores) / len(scores), 4)}


def _save(path: Path, training: Training, curve: list[dict], seconds: float) -> None:
    buffer = io.BytesIO()
    torch.save({"training": training.state_dict(), "curve": json.dumps(curve), "seconds": seconds}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _trained(spec: TrainSpec, key: str) -> Path | None:
    """The card of ``spec``'s network when the network is there and was trained from these very
    files and settings (its card's ``key``)."""
    card = spec.network.with_suffix(".json")
    try:
        return card if spec.network.is_file() and json.loads(card.read_text()).get("key") == key else None
    except (OSError, ValueError, AttributeError):
        return None


def _write_card(spec: TrainSpec, key: str, digests: dict[Path, str], photos: tuple[list[Path], list[Path], list[str]],
                curve: list[dict], command: str, seconds: float) -> Path:
    card, (training, held, skipped) = spec.network.with_suffix(".json"), photos
    write_json(card, {
        "format": CARD_FORMAT, "nstbatch": __version__, "network": spec.network.name, "key": key,
        "styles": [{"path": str(p), "sha256": digests[p], "row": row} for row, p in enumerate(spec.paintings)],
        "photos": {"training": len(training), "held_out": [str(p) for p in held], "left_out": skipped,
                   "sha256": sorted(digests[p] for p in training)},
        "training": {"steps": spec.steps, "size": spec.size, "side": spec.side, "batch": spec.batch, "lr": spec.lr,
                     "seed": spec.seed, "seconds": round(seconds, 1)},
        "shape": {"styles": len(spec.paintings), "width": spec.width, "blocks": spec.blocks},
        "criterion": {"preset": spec.params.preset, "style_layers": list(spec.params.style_layers),
                      "content_layers": list(spec.params.content_layers), "weights": spec.params.weights,
                      "temporal_weight": spec.params.temporal_weight},
        "held_out_yardstick": curve, "command": command})
    return card


@dataclass(frozen=True)
class TrainCall:
    """How ``train_manifest`` reports and is stopped: ``notice`` hears what it decided (a
    photo left out, a resume, a network already trained), ``on_step`` each update of the
    network ``name`` being trained, ``should_stop`` is asked before each update."""

    device: str | torch.device = "cpu"
    on_step: Callable[[str, TrainProgress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    notice: Callable[[str], None] | None = None
    command: str = ""


def train_manifest(manifest_path: Path, state_dir: Path | None = None, *, overrides: dict[str, str] | None = None,
                   skip_invalid: bool = False, call: TrainCall = TrainCall()) -> list[TrainResult]:
    """``nstbatch train MANIFEST``: each entry that names ``network:`` trained on its own images
    (one row per painting of its pool), in manifest order; a stop ends it after the network
    under way is checkpointed (its result has no card). The manifest's mistakes are refused
    before any work, as ``run`` refuses them (``skip_invalid``: train what parsed)."""
    from ..io.manifest import read_manifest
    from .ledger import state_root
    from .plan import InvalidManifest

    manifest = read_manifest(manifest_path, overrides)
    if manifest.problems and not skip_invalid:
        raise InvalidManifest(manifest_path, manifest.problems)
    if not manifest.networks:
        raise UsageError(f"{manifest_path}: no entry names a network to train",
                         hint="give a dataset entry network: nets/NAME.onnx (docs/networks.md)")
    root, results = state_root(manifest_path, state_dir, overrides), []
    notice = call.notice or (lambda message: None)
    for entry in manifest.networks:
        spec = TrainSpec(entry.photos, entry.paintings, entry.network, entry.params, size=entry.size,
                         steps=entry.steps, batch=entry.batch, side=entry.params.size,
                         score_size=entry.params.size)  # as run will make them
        on_step = call.on_step and (lambda progress, name=entry.network.name: call.on_step(name, progress))
        result = train_network(spec, root, device=call.device, on_step=on_step, should_stop=call.should_stop,
                               notice=lambda message, where=entry.where: notice(f"{where}: {message}"),
                               command=call.command)
        results.append(result)
        if result.card is None:
            break  # stopped: the next call resumes it
    return results
