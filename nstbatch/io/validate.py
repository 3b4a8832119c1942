"""Everything that can be wrong with a manifest's jobs, found before any GPU time is spent.

Reads image headers only (never decodes), and each distinct file once, so a 100,000-row
manifest over a few images validates in seconds.
"""
from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from pathlib import Path

from ..config import INITS, split_weights_spec
from ..errors import NstbatchError
from ..geometry import long_side_size, output_size
from .cards import NetworkCard
from .images import LABEL_MODES, ImageInfo, check_bit_depth, probe_image
from .video import ClipInfo, check_clip_streams, clip_output_format, encoding, frame_files, probe_clip
from ..layers import min_image_side, suggest
from .manifest import Job, Manifest, Problem
from .webdataset import output_folder


class _OutputFolders:
    """Why outputs cannot be written in a folder, or None; each folder asked once. Tried for
    real, once per nearest existing folder: a folder made there and removed at once, since
    permission bits alone do not tell (root on /proc, a read-only mount); nothing is left."""

    def __init__(self):
        self._answers: dict[Path, str | None] = {}
        self._tried: dict[Path, str | None] = {}  # nearest existing folder -> why not, or None

    def problem(self, folder: Path) -> str | None:
        if folder not in self._answers:
            self._answers[folder] = self._why_not(folder)
        return self._answers[folder]

    def _why_not(self, folder: Path) -> str | None:
        probe = folder
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if not probe.is_dir():
            return f"output folder {folder} cannot be created: {probe} is a file"
        if probe not in self._tried:
            try:
                os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".nstbatch-probe-"))
                self._tried[probe] = None
            except OSError as e:
                self._tried[probe] = e.strerror or str(e)
        if self._tried[probe] is None:
            return None
        what = "is not writable" if probe == folder else f"cannot be created in {probe}"
        return f"output folder {folder} {what} ({self._tried[probe]})"


class _Networks:
    """Why a job cannot go through its trained network (no network or card yet, a painting it
    was not trained on), or None; each network read and each painting hashed once."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest.path
        self.trained = {entry.network for entry in manifest.networks}  # the networks this manifest trains
        self._answers: dict[tuple[Path, Path], str | None] = {}

    def problem(self, network: Path, painting: Path) -> str | None:
        if (network, painting) not in self._answers:
            try:
                NetworkCard.of(network).row_of(painting)
                self._answers[network, painting] = None
            except NstbatchError as e:  # each hint says to train: name the manifest that trains it
                by = (f"nstbatch train {self.manifest}" if network in self.trained else
                      "nstbatch train on a manifest whose dataset entry names it (docs/networks.md)")
                hint = (e.hint or "").replace("nstbatch train", by)
                self._answers[network, painting] = f"{e.message} ({hint})" if hint else e.message
        return self._answers[network, painting]


def check_jobs(manifest: Manifest, *, check_files: bool = True) -> list[Problem]:
    """Problems of the parsed jobs, on top of the ones parsing found; each names its line."""
    problems: list[Problem] = []
    probes: dict[tuple[Path, bool], ImageInfo | ClipInfo | str] = {}

    def probe(path: Path, clip: bool = False) -> ImageInfo | ClipInfo | str:
        if (path, clip) not in probes:
            try:
                probes[path, clip] = probe_clip(path) if clip else probe_image(path)
            except NstbatchError as e:
                probes[path, clip] = str(e)
        return probes[path, clip]

    # Absolute, normalised strings: cheap for 100,000 rows (no symlink resolution here; a run
    # compares with os.path.samefile before it writes).
    def key(path: Path) -> str:
        return os.path.abspath(path)

    by_id: dict[str, list[Job]] = defaultdict(list)
    by_output: dict[str, list[Job]] = defaultdict(list)
    inputs: set[str] = set()
    for job in manifest.jobs:
        by_id[job.id].append(job)
        by_output[key(job.output)].append(job)
        inputs.update(key(p) for p in job.inputs)
    folders, networks = _OutputFolders(), _Networks(manifest)
    for job in manifest.jobs:
        def report(message: str, job=job) -> None:
            problems.append(Problem(job.where, message, job.id, job.line))

        try:
            if job.clip:
                if clip_output_format(job.output) is not None:
                    encoding(job.output, job.params)  # the codec, its container, crf and pixel format agree
            else:
                check_bit_depth(job.output, job.params.bit_depth)  # the format is known, and holds the depth
        except NstbatchError as e:
            report(str(e))
        output_key = key(job.output)
        if output_key in inputs:
            report(f"output {job.output} is also an input of this manifest; it would be overwritten")
        if len(by_output[output_key]) > 1:
            others = [j.where for j in by_output[output_key] if j is not job]
            report(f"output {job.output} is also written by {', '.join(others)}")
        if len(by_id[job.id]) > 1:
            others = [j.where for j in by_id[job.id] if j is not job]
            report(f"duplicate id {job.id!r} (also at {', '.join(others)})")
        if (problem := folders.problem(output_folder(job.output))) is not None:
            report(problem)
        weights_path = split_weights_spec(job.params.weights)[0]
        if weights_path is not None and not weights_path.is_file():
            report(f"weights file {weights_path} does not exist")
        if job.network is not None and (problem := networks.problem(job.network, job.styles[0][0])):
            report(problem)
        if job.clip and job.params.flow_file and not Path(job.params.flow_file).is_file():
            report(f"flow: RAFT weights file {job.params.flow_file} does not exist (torchvision's"
                   f" raft_small/raft_large .pth; nothing is downloaded)")
        if check_files:
            _check_files(job, probe, report)
    problems += _check_copies(manifest, set(by_output), inputs, folders)
    return problems


def _check_files(job: Job, probe, report) -> None:
    """The job's input files: each readable (``probe``), and big enough for its layers at the
    sizes the job uses them."""
    init = [("init", Path(job.params.init_file))] if job.params.init_file else []
    style_side = job.params.style_side()  # of the output's long side, once the content is read
    for role, path in [("content", job.content)] + [("style", p) for p, _ in job.styles] + init:
        info = probe(path, job.clip and role == "content")
        if isinstance(info, str):
            # an init that is no file may be a misspelt choice ('palet' for palette)
            close = suggest(path.name, INITS) if role == "init" and not path.exists() else ""
            report(f"{role}: {info}{close}")
            continue
        if isinstance(info, ClipInfo):
            try:
                check_clip_streams(info, job.output, job.params)
            except NstbatchError as e:
                report(str(e))
        if role == "init" or job.network is not None:
            continue  # resized to the output, whatever its size; a network takes any size
        w, h = (output_size(info.width, info.height, *job.params.geometry) if role == "content"
                else long_side_size(info.width, info.height, style_side))
        if role == "content":
            style_side = job.params.style_side(max(w, h))
        layers = job.params.feature_layers if role == "content" else job.params.style_layers
        need = min_image_side(layers)  # (coarse scales too small for them are skipped)
        if layers and min(w, h) < need:
            report(f"{role} {path.name} is {w}x{h} px at size "
                   f"{job.params.size if role == 'content' else style_side}"
                   f", too small for its layers (each side needs {need} px); raise size")
    if job.regions is not None:
        _check_masks(job, probe(job.content, job.clip), probe, report)


def mask_problems(job: Job) -> list[str]:
    """What is wrong with a job's masks (``_check_masks``), for a door without a manifest."""
    problems: list[str] = []

    def probe(path: Path, clip: bool = False) -> ImageInfo | ClipInfo | str:
        try:
            return probe_clip(path) if clip else probe_image(path)
        except NstbatchError as e:
            return str(e)
    if job.regions is not None:
        _check_masks(job, probe(job.content, job.clip), probe, problems.append)
    return problems


def _check_masks(job: Job, content, probe, report) -> None:
    """Each mask and the keep mask readable, and drawn over the content: of its shape (it is
    brought to the content's pixels, so any size of that shape will do); each style mask drawn
    over its painting the same way."""
    over = {path: (job.content, content) for path in job.regions.files}
    for path, (style, _) in zip(job.regions.style_masks, job.styles):
        over[path] = (style, probe(style, False))
    for path, (image, drawn_over) in over.items():
        if job.clip and path.is_dir():  # a clip's masks, one a frame: as many as its frames, of its shape
            files = frame_files(path)
            if not isinstance(drawn_over, str) and len(files) != drawn_over.frames:
                report(f"mask folder {path} holds {len(files)} image(s) for the clip's {drawn_over.frames} frames:"
                       f" give one mask a frame (sorted by name), or one image for every frame")
                continue
            path = files[0] if files else path
        info = probe(path, False)
        if isinstance(info, str):
            report(f"mask: {info}")
        elif path == job.regions.labels and info.mode not in LABEL_MODES:
            report(f"labels {path} is a {info.mode} image; a label image holds one value a pixel: save the"
                   f" segmentation map as a grey or palette PNG (its values, not colours)")
        elif not isinstance(drawn_over, str) and _unlike(info, drawn_over):
            role = "painting" if image != job.content else "content"
            report(f"mask {path} is {info.width}x{info.height} px, the {role} {image.name}"
                   f" {drawn_over.width}x{drawn_over.height}: draw each mask over its {role} (the same shape)")


def _unlike(mask, image) -> bool:
    """Whether ``mask`` is not of ``image``'s shape (2 % apart or more)."""
    return abs(mask.width * image.height - image.width * mask.height) > 0.02 * image.width * mask.height


def _check_copies(manifest: Manifest, outputs: set[str], inputs: set[str],
                  folders: _OutputFolders) -> list[Problem]:
    """Sidecar files of dataset entries: each has one target, which is no output or input."""
    problems: list[Problem] = []
    targets: dict[str, str] = {}
    for copy in manifest.copies:
        target = os.path.abspath(copy.target)
        message = None
        if target == os.path.abspath(copy.source):
            message = f"copy: {copy.target} is the file itself; put the outputs in another folder"
        elif target in outputs:
            message = f"copy: {copy.target} is also a stylized output of this manifest"
        elif target in inputs:
            message = f"copy: {copy.target} is an input of this manifest; it would be overwritten"
        elif target in targets:
            message = f"copy: {copy.target} is also the copy of {targets[target]}"
        else:
            problem = folders.problem(output_folder(copy.target))
            message = problem and f"copy: {problem}"
        targets.setdefault(target, str(copy.source))
        if message:
            problems.append(Problem(copy.where, message, line=copy.line))
    return problems


def validate(manifest: Manifest, *, check_files: bool = True) -> list[Problem]:
    """All problems: parsing's and the jobs', in manifest order."""
    problems = manifest.problems + check_jobs(manifest, check_files=check_files)
    return sorted(problems, key=lambda p: p.line)
