"""The Python entry for one image: ``nstbatch.stylize(content, style, params)``, and for one
file: ``stylize_file`` (what ``nstbatch stylize`` does). Both run the one job path of
``jobs.single``, the path ``nstbatch run`` takes."""
from __future__ import annotations

import os
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, overload

import torch
from PIL import Image

from .config import StyleParams, resolve_params
from .engine.devices import resolve_device
from .engine.optimize import Progress, Result
from .engine.pixels import to_pil, to_tensor
from .engine.vgg import VGGFeatures
from .engine.weights import load_weights
from .errors import InputError, UsageError
from .io.images import fit_image, to_rgb
from .io.hashing import JobHasher
from .io.manifest import Job, RegionFiles
from .io.validate import mask_problems
from .io.video import is_video_file
from .jobs.clip import ClipCall, ClipResult, NetworkFrames, clip_job, network_clip_job
from .jobs.frames import FrameStore
from .jobs.single import (Hooks, check_job_files, load_content, network_provenance, optimize_job, provenance,
                          save_output, stylize_job)
from .styles.store import StyleTargetStore, default_store


@overload
def stylize(content: Image.Image, style: Image.Image, params: StyleParams | None = ..., **kw) -> Image.Image: ...
@overload
def stylize(content: torch.Tensor, style: torch.Tensor, params: StyleParams | None = ..., **kw) -> torch.Tensor: ...


def stylize(content, style, params: StyleParams | None = None, *, device: str = "auto",
            callback: Callable[[Progress], None] | None = None,
            features: VGGFeatures | None = None, store: StyleTargetStore | None = None):
    """Stylize one image. Pillow images are resized (and cropped) as ``params`` says (``size``,
    ``resize``, ``crop``) and an RGB Pillow image comes back: the picture ``nstbatch run`` makes
    of the same files. Tensors ``(1, 3, H, W)`` in [0, 1] are used at their own size and a
    tensor comes back. ``style`` may also be a blend: a list of ``(style, weight)``.
    ``params`` defaults to the default preset; ``callback`` hears each step's costs;
    ``store``: where style targets come from (default: ONNX Runtime with the cache, as ``run``)."""
    image, _ = stylize_with_history(content, style, params, device=device, features=features, store=store,
                                    hooks=Hooks(on_step=callback))
    return image


def stylize_with_history(content, style, params: StyleParams | None = None, *,
                         device: str = "auto", features=None, store: StyleTargetStore | None = None,
                         **optimize_options):
    """As ``stylize``, and also the ``Result`` with the cost history. Other keywords go to
    ``jobs.single.optimize_job`` (``hooks``, ``init``, ``resume``, ``memory``); without
    ``init``, ``params.init_file`` is read there."""
    params = params or resolve_params()
    as_pil = isinstance(content, Image.Image)
    blend = ([] if style is None else [(style, 1.0)] if isinstance(style, (Image.Image, torch.Tensor))
             else list(style))
    if as_pil:
        content = to_tensor(fit_image(to_rgb(content), *params.geometry))
    target = resolve_device(device) if features is None else next(features.parameters()).device
    store = store or default_store(target)
    style_targets, _ = store.for_images(blend, params, content, max(content.shape[-2:]))
    result = optimize_job(content.to(target), style_targets, params, features=features, **optimize_options)
    return (to_pil(result.image) if as_pil else result.image), result


StyleSpec = Sequence[tuple["str | os.PathLike", float]]


def _style_list(style) -> list[tuple[Path, float]]:
    """One style path, or a blend: a sequence of (path, weight)."""
    if isinstance(style, (str, os.PathLike)):
        return [(Path(style), 1.0)]
    return [(Path(path), float(weight)) for path, weight in style]


def stylize_file(content: str | os.PathLike, style: "str | os.PathLike | StyleSpec",
                 output: str | os.PathLike, params: StyleParams, *, device: str = "auto",
                 features: VGGFeatures | None = None, store: StyleTargetStore | None = None,
                 **optimize_options) -> Result:
    """Stylize ``content`` with ``style`` (a path, or a blend of (path, weight)) and write
    ``output`` atomically: on any failure, nothing is written. The job as ``run`` does it
    (``stylize_job``); ``regions=RegionFiles(masks, keep)``: a painting per mask (``style``
    then one per mask), parts kept as photographed."""
    content, output, styles = Path(content), Path(output), _style_list(style)
    check_job_files(content, styles, output, params)
    regions = optimize_options.get("regions")
    if regions is not None:
        _check_regions(Job("stylize", content, tuple(styles), output, params, str(content), regions=regions))
    load_weights(params.weights)  # a weights problem shows before any decoding work
    result = stylize_job(content, styles, params, device=device, features=features, store=store,
                         **optimize_options)
    save_output(result.image, output, params, provenance(params, result, content, styles), content)
    return result


def stylize_with_network(content: str | os.PathLike, network: str | os.PathLike, output: str | os.PathLike,
                         params: StyleParams, *, painting: str | os.PathLike | None = None, providers: str = "auto",
                         allow_fallback: bool = False, device: str = "cpu",
                         notice: Callable[[str], None] | None = None) -> str:
    """Stylize ``content`` in one forward pass of a trained transform ``network`` (an ONNX model
    with its card, ``nstbatch train``) and write ``output`` atomically, at the output size of
    ``params`` (``size``, ``resize``, ``crop``; the network's other parameters were fixed by
    its training). ``painting``: which of a pool network's paintings (a file or a name).
    Returns the ONNX Runtime provider that ran it."""
    from .styles.networks import Networks

    content, output, network = Path(content), Path(output), Path(network)
    check_job_files(content, [], output, params)
    networks = Networks(providers, allow_fallback=allow_fallback, device=device, notice=notice)
    session, card = networks.open(network)
    image = networks(network, load_content(content, params), [painting])
    save_output(image, output, params,
                network_provenance(params, network, card.names()[networks.row(network, painting)], content), content)
    return session.provider


def is_clip(path: str | os.PathLike) -> bool:
    """Whether ``stylize``'s content is a clip: a video file, or a folder of frames."""
    return is_video_file(path) or Path(path).is_dir()


def _check_regions(job: Job) -> None:
    """A one-off job's masks as ``validate`` checks a manifest's: one per painting, each
    readable and of its content's (or painting's) shape; the first problem raised."""
    regions, count = job.regions, len(job.styles)
    if regions.masks and len(regions.masks) != count:
        raise UsageError(f"{len(regions.masks)} mask(s) for {count} painting(s): give one mask per painting")
    if regions.style_masks and len(regions.style_masks) != count:
        raise UsageError(f"{len(regions.style_masks)} style mask(s) for {count} painting(s): give one per"
                         " painting, white on the part of it its region takes")
    for problem in mask_problems(job):
        raise InputError(problem)


def stylize_clip_file(content: str | os.PathLike, style: "str | os.PathLike | StyleSpec",
                      output: str | os.PathLike, params: StyleParams, *, device: str = "auto",
                      features: VGGFeatures | None = None, store: StyleTargetStore | None = None,
                      hooks: Hooks | None = None, on_frame: Callable[[int, int], None] | None = None,
                      regions: RegionFiles | None = None) -> ClipResult:
    """Stylize a clip (a video file or a folder of frames) frame-steady into ``output`` (a
    video file, or a folder of PNG frames), as ``run`` does a clip job (``clip.clip_job``). The
    frames are kept beside the output (``.nstbatch/frames/``) until it is written, so the same
    call after an interruption resumes at the first missing frame. ``regions``: masks (one
    image for every frame, or a folder of one a frame) as for a still (``stylize_file``)."""
    content, output, styles = Path(content), Path(output), _style_list(style)
    load_weights(params.weights)
    target = resolve_device(device) if features is None else next(features.parameters()).device
    job = Job("clip", content, tuple(styles), output, params, str(content), clip=True, regions=regions)
    if regions is not None:
        _check_regions(job)
    with _frames_beside(job) as frames:
        _, done = clip_job(job, store or default_store(target), frames, ClipCall(features, hooks, on_frame, target))
    return done


@contextmanager
def _frames_beside(job: Job, tag: str = "") -> Iterator[FrameStore]:
    """A clip job's frames beside its output (``.nstbatch/frames/``) while it is made, so the
    same call after an interruption resumes at the first missing frame; gone once it is
    written, with the folders they were in where nothing else is there. ``tag``: what else
    tells its frames from another's (a network's row)."""
    key = JobHasher()(job)[:16]  # as run's: the inputs by their bytes (RAFT's weights too), not their paths
    frames = FrameStore(job.output.parent / ".nstbatch" / "frames" / f"{job.output.name}-{key}{tag}")
    yield frames
    frames.discard()
    for folder in (frames.folder.parent, frames.folder.parent.parent):  # nothing but outputs among the outputs
        try:
            folder.rmdir()  # once empty: another clip's frames beside it keep it
        except OSError:
            break


def stylize_clip_with_network(content: str | os.PathLike, network: str | os.PathLike, output: str | os.PathLike,
                              params: StyleParams, *, painting: str | os.PathLike | None = None,
                              providers: str = "auto", allow_fallback: bool = False, device: str = "cpu",
                              notice: Callable[[str], None] | None = None,
                              on_frame: Callable[[int, int], None] | None = None) -> tuple[int, int, str]:
    """A clip (a video file or a folder of frames) through a trained transform ``network``, frame
    by frame with no flow, into ``output`` (a video file or a folder of PNG frames), as ``run``
    does a clip entry that names ``network:`` (``clip.network_clip_job``); resumable as
    ``stylize_clip_file`` is. ``painting``: which of a pool network's paintings. Returns the
    clip's frames, how many this call painted, and the ONNX Runtime provider."""
    from .styles.networks import Networks

    content, output, network = Path(content), Path(output), Path(network)
    networks = Networks(providers, allow_fallback=allow_fallback, device=device, notice=notice)
    session, row = networks.open(network)[0], networks.row(network, painting)
    job = Job("clip", content, (), output, params, str(content), clip=True, network=network)
    with _frames_beside(job, f"-row{row}") as frames:
        paint = NetworkFrames(lambda images: networks(network, images, [painting] * len(images)), on_frame=on_frame)
        info, painted = network_clip_job(job, frames, paint)
    return info.frames, painted, session.provider
