"""Dataset entries of YAML manifests: a folder tree of content images, a pool of styles, and
how styles are assigned, expanded into ordinary ``Job``s (and the sidecar files to copy).

Determinism is the point: a content's styles depend only on the seed, its path relative to
the dataset folder, the variant and the sorted pool, so the same manifest gives the same jobs
on any machine, and adding or removing other images changes no other image's styles
(``assign: random`` and ``each``; ``cycle`` deals styles out in file order, so it trades that
for equal counts). Planning reads directory listings and image headers only.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import glob
import hashlib
import os
import shutil
import string
from dataclasses import dataclass, field
from pathlib import Path

from . import webdataset
from ..config import StyleParams
from ..errors import NstbatchError
from ..fs import atomic_write

# Files recognised as images in a dataset folder or a style pool (case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
ASSIGNS = ("random", "cycle", "each")
DATASET_KEYS = ("dataset", "style_pool", "variants", "assign", "output", "copy", "format")
# An entry whose images go through a trained network (``nstbatch train`` trains it from them).
NETWORK_KEYS = ("network", "train_size", "train_steps", "train_batch", "refine_steps")
# An entry whose images are painted in part (docs/regions.md): a mask per image, from a tree beside the images.
REGION_KEYS = ("masks", "keep", "labels")
# What each key of a dataset entry means, for the reference (docs/make_reference.py).
DATASET_HELP = {
    "dataset": "a folder walked recursively (sorted; symlinked folders not followed), or WebDataset shards"
               " (`train-{000000..000146}.tar`, a glob, a list)",
    "style_pool": "the paintings: a folder, a glob, or a list of files",
    "variants": "outputs per content image (default 1)",
    "assign": "how paintings are dealt: random (default, reproducible from `seed`), cycle, or each (every"
              " painting: a cross product)",
    "output": "a template: `{content_reldir}`, `{content_relpath}`, `{content_stem}`, `{style_stem}`, `{variant}`,"
              " `{id}`, `{index}`; for shards `{shard_stem}`, `{key}` (default: the tree mirrored under"
              " `output_dir`)",
    "copy": "sidecar files (globs, e.g. `*.xml`) copied unchanged into the mirrored tree, or a shard sample's"
            " other members",
    "format": "shards: the image format of the output samples (png, jpg, webp; default: the input's)",
    "network": "`nets/NAME.onnx`: a transform network for the pool (one row per painting), trained on the entry's"
               " own images by `nstbatch train` and applied to them by `nstbatch run` in one pass each",
    "train_size": "`nstbatch train`: the side of the random crops it trains on (default 256)",
    "train_steps": "`nstbatch train`: the training's updates (default 2000)",
    "train_batch": "`nstbatch train`: crops an update (default 4)",
    "refine_steps": "`nstbatch run`: after the network's pass, this many steps of the preset's optimisation at the"
                    " full size, started from the network's picture (default 0: the network's picture as it is)",
    "masks": "each image's mask, white where its painting paints (the rest kept as photographed): a template over"
             " a tree mirroring the images, `masks/{content_relpath}.png` (the output's fields; outside the"
             " dataset folder, which would stylize them), or for shards a member of the sample's own,"
             " `{shard}/{key}.mask.png`",
    "keep": "each image's keep mask, white where the photo is kept as photographed (faces, people, labelled"
            " objects): a template as for `masks`",
    "labels": "each image's label image (a segmentation map, one value a pixel), instead of masks: a template as"
              " for `masks` (`{shard}/{key}.labels.png` for shards)",
    "regions": "with labels: a table from label values (`15`, `\"3,4\"`, `default`) to `style` (the image's"
               " painting) or `keep` (the photo kept: people, lesions, text)",
}
DATASET_TEMPLATE_FIELDS = ("content_reldir", "content_relpath", "content_stem", "style_stem",
                           "variant", "id", "index", "shard_stem", "key", "shard")
# The image formats an output shard's samples can take (``format:``), by extension.
SAMPLE_FORMATS = ("png", "jpg", "jpeg", "webp")


class EntryError(Exception):
    """The entry as a whole is wrong; one message for its line."""


@dataclass(frozen=True)
class Copy:
    """A sidecar file copied unchanged into the mirrored tree."""

    source: Path
    target: Path
    where: str
    line: int = 0  # the entry's line in the manifest

    @property
    def key(self) -> str:
        return str(self.target)


@dataclass(frozen=True)
class Origin:
    """Where a dataset job's image comes from, for the columns of the outputs' metadata
    (``metadata.jsonl``) and a shard sample's ``.json``."""

    relpath: str  # the content, relative to the dataset folder (shards: 'train-000000.tar/key.jpg')
    style: str  # its painting's label in the pool
    variant: int
    root: str = ""  # the entry's output root (the template's fixed folder), absolute
    label: str = ""  # the class: the content's first folder ('' at the top)


@dataclass(frozen=True)
class DatasetJob:
    """One job of a dataset entry, before it gets its id."""

    content: str  # the content's path as the manifest would name it (dataset folder / relpath)
    relpath: str  # relative to the dataset folder, with '/'
    variant: int
    style: tuple[str, Path]  # (its label in the pool, its path)
    output: str  # the template filled in; "{id}" still to be replaced by the job's id
    params: StyleParams  # the entry's, with the variant's seed
    origin: Origin
    masks: dict[str, str] = dataclasses.field(default_factory=dict)  # ``masks``/``keep``: paths as the manifest has them


@dataclass(frozen=True)
class Expanded:
    """What one dataset entry becomes: its jobs, the sidecars, and problems of single files
    (a broken painting)."""

    jobs: list[DatasetJob]
    copies: list[Copy]
    problems: list[str]
    pool: list[tuple[str, Path]] = field(default_factory=list)  # the usable paintings, in order


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def walk(root: Path) -> list[str]:
    """Every file under ``root``, as '/'-separated paths relative to it, sorted the same way on
    every machine; folders are walked recursively and symlinked folders are not followed."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        rel = os.path.relpath(folder, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found += [prefix + name for name in files]
    return sorted(found)


def draw(seed: int, relpath: str, count: int, n: int) -> list[int]:
    """``count`` indices into a pool of ``n``, distinct while ``count <= n`` (then repeating in
    the same order): the first ``count`` places of a Fisher-Yates shuffle driven by SHA-256 of
    (seed, relpath, place). Pure arithmetic on those three: the same on every machine and
    Python version, and independent of every other file."""
    swaps: dict[int, int] = {}
    picks = []
    for place in range(min(count, n)):
        digest = hashlib.sha256(f"{seed}\0{relpath}\0{place}".encode()).digest()
        other = place + int.from_bytes(digest[:8], "big") % (n - place)
        picks.append(swaps.get(other, other))
        swaps[other] = swaps.get(place, place)
    return [picks[v % n] for v in range(count)] if count > n else picks


def _texts(value, what: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or any(not isinstance(i, str) or not i.strip() for i in items):
        raise EntryError(f"{what} must be a path, a glob or a list of them, got {value!r}")
    return [i.strip() for i in items]


def pool_files(base: Path, value) -> list[tuple[str, Path]]:
    """The style pool: (label, path) sorted by label (the path relative to the manifest's
    folder). A folder gives its images, recursively; a glob its matching files; a list both."""
    found: dict[str, Path] = {}
    for text in _texts(value, "style_pool"):
        path = Path(os.path.normpath(base / os.path.expanduser(text)))
        if glob.has_magic(text):
            matches = [Path(m) for m in glob.glob(str(path), recursive=True) if os.path.isfile(m)]
            if not matches:
                raise EntryError(f"style_pool glob {text!r} matches no file")
        elif path.is_dir():
            matches = [path / rel for rel in walk(path) if is_image_name(rel)]
            if not matches:
                raise EntryError(f"style_pool folder {text!r} has no images"
                                 f" ({', '.join(IMAGE_SUFFIXES[:4])}, …)")
        else:
            matches = [path]  # a missing file is reported with the others, by the probe
        for match in matches:
            found[os.path.relpath(match, base).replace(os.sep, "/")] = match
    return sorted(found.items())


def _copy_folder_template(template: str) -> str:
    """The folder part of the output template, which sidecars mirror: it may use
    ``{content_reldir}`` and nothing else, so each sidecar has one place to go."""
    folder = os.path.dirname(template)
    names = {name for _, name, _, _ in string.Formatter().parse(folder) if name is not None}
    if names - {"content_reldir"}:
        raise EntryError(f"copy: the output folder {folder!r} may use only {{content_reldir}}"
                         f" (it uses {', '.join('{' + n + '}' for n in sorted(names))}), so that each"
                         " sidecar file has one place to go")
    return folder


@dataclass(frozen=True)
class _Entry:
    """A dataset entry's keys, checked."""

    folder: str  # as written ('' for shards)
    root: Path  # the folder contents are named relative to (for shards, the manifest's)
    variants: int
    assign: str
    copy_patterns: list[str]
    shards: tuple[Path, ...] = ()  # WebDataset shards instead of a folder tree
    format: str | None = None  # output shards' image format (default: the input member's)
    masks: dict[str, str] = dataclasses.field(default_factory=dict)  # REGION_KEYS' templates, as given


def _read_entry(base: Path, entry: dict) -> _Entry:
    if "style_pool" not in entry or entry["style_pool"] in (None, "", []):
        raise EntryError("a dataset entry needs style_pool: a folder, a glob or a list of paintings")
    variants = entry.get("variants", 1)
    if isinstance(variants, bool) or not isinstance(variants, int) or not 1 <= variants <= 1000:
        raise EntryError(f"variants must be a whole number from 1 to 1000, got {variants!r}")
    assign = entry.get("assign", "random")
    if assign not in ASSIGNS:
        raise EntryError(f"assign must be one of {', '.join(ASSIGNS)}, got {assign!r}")
    patterns = [p.lower() for p in _texts(entry["copy"], "copy")] if entry.get("copy") else []
    fmt = entry.get("format")
    if fmt is not None and (not isinstance(fmt, str) or fmt.lower().lstrip(".") not in SAMPLE_FORMATS):
        raise EntryError(f"format must be one of {', '.join(SAMPLE_FORMATS)} (output shards' images), got {fmt!r}")
    fmt = fmt.lower().lstrip(".") if fmt else None
    masks = _mask_templates(entry)
    if shard_texts := _shard_texts(entry.get("dataset")):
        # Members are named relative to the manifest's folder (wds/train-000000.tar/key.jpg), so
        # that a shard added anywhere changes no other member's name, id or styles.
        return _Entry("", base, variants, assign, patterns, tuple(_shard_files(base, shard_texts)), fmt, masks)
    folder = entry.get("dataset")
    if not isinstance(folder, str) or not folder.strip():
        raise EntryError(f"dataset must be a folder or WebDataset shards (.tar), got {folder!r}")
    root = Path(os.path.normpath(base / os.path.expanduser(folder.strip())))
    if not root.is_dir():
        raise EntryError(f"dataset folder {root} does not exist" if not root.exists()
                         else f"dataset {root} is a file, not a folder (for one image, use content:)")
    for key, template in masks.items():
        first = Path(os.path.normpath(base / os.path.expanduser(template.split("{", 1)[0])))
        if "{" in template and (str(first) + os.sep).startswith(str(root) + os.sep):
            raise EntryError(f"{key}: {template!r} puts the masks in the dataset folder {root}, which would"
                             " stylize them as images; keep the mask tree beside it (masks/{content_relpath}.png)")
    return _Entry(folder.strip(), root, variants, assign, patterns, (), fmt, masks)


def _mask_templates(entry: dict) -> dict[str, str]:
    """``masks`` and ``keep`` of a dataset entry: one template each (a painting per job, so one
    mask), naming each image's mask by the output's fields."""
    templates = {}
    for key in REGION_KEYS:
        if key not in entry:
            continue
        value = entry[key]
        if not isinstance(value, str) or not value.strip():
            raise EntryError(f"{key}: a template naming each image's mask, e.g. masks/{{content_relpath}}.png"
                             f" (a dataset entry gives each image one painting, so one mask), got {value!r}")
        if "{" not in value:
            raise EntryError(f"{key}: {value!r} is one file for every image; name each image's mask with"
                             " {content_relpath}, {content_reldir} or {content_stem}")
        templates[key] = value.strip()
    return templates


def _shard_texts(value) -> list[str]:
    """The entry's shard patterns when ``dataset`` names .tar files (a pattern, or a list)."""
    items = value if isinstance(value, list) else [value]
    texts = [i.strip() for i in items if isinstance(i, str)]
    if texts and len(texts) == len(items) and all(t.lower().endswith(webdataset.SUFFIX) for t in texts):
        return texts
    if isinstance(value, list):
        raise EntryError(f"a list in dataset names WebDataset shards, each ending in .tar; got {value!r}")
    return []


def _shard_files(base: Path, texts: list[str]) -> list[Path]:
    """Each text's shards: a brace pattern (``train-{000000..000146}.tar``), a glob, or a
    file; sorted, each once. A shard a pattern names that is not there is an error."""
    found: dict[str, Path] = {}
    for text in texts:
        for name in webdataset.brace_expand(text):
            path = os.path.normpath(base / os.path.expanduser(name))
            if glob.has_magic(name):
                matches = sorted(glob.glob(path, recursive=True))
                if not matches:
                    raise EntryError(f"dataset glob {name!r} matches no shard")
            elif not os.path.isfile(path):
                raise EntryError(f"dataset shard {path} does not exist"
                                 + (f" (from {text!r})" if text != name else ""))
            else:
                matches = [path]
            found.update((m, Path(m)) for m in matches)
    return [found[k] for k in sorted(found)]


def _usable_pool(base: Path, value, probe) -> tuple[list[tuple[str, Path]], list[str]]:
    """The pool's paintings that ``probe`` accepts, and a problem for each it refuses."""
    problems, pool = [], []
    for label, path in pool_files(base, value):
        try:
            probe(path)
            pool.append((label, path))
        except NstbatchError as e:
            problems.append(f"style_pool: {e} (left out of the pool)")
    if not pool:
        raise EntryError("style_pool has no usable painting" + (f": {'; '.join(problems)}" if problems else ""))
    return pool, problems


def _output_template(entry: dict, spec: _Entry, pool_size: int) -> str:
    template = entry.get("output")
    if template is None:
        if spec.shards:
            return "{shard_stem}.tar"  # shards in, shards out
        many_styles = spec.assign == "each" and pool_size > 1
        return ("{content_reldir}/{content_stem}" + ("_{style_stem}" if many_styles else "")
                + ("_{variant}" if spec.variants > 1 else "") + ".png")
    if not isinstance(template, str) or not template.strip():
        raise EntryError(f"output must be a file name template, got {template!r}")
    if not spec.shards and "{shard_stem}" in template:
        raise EntryError("{shard_stem} names the input shard: the dataset is a folder, not .tar shards")
    return template


def _picks(spec: _Entry, seed: int, number: int, rel: str, pool_size: int) -> list[tuple[int, int]]:
    """(style index, variant) of each job of the ``number``-th content image ``rel``."""
    if spec.assign == "each":
        return [(s, v) for s in range(pool_size) for v in range(spec.variants)]
    if spec.assign == "cycle":
        return [((number * spec.variants + v) % pool_size, v) for v in range(spec.variants)]
    return [(s, v) for v, s in enumerate(draw(seed, rel, spec.variants, pool_size))]


def _fill(template: str, fields: dict) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise EntryError(f"output template {template!r}: {e!s} is not one of "
                         + ", ".join("{" + f + "}" for f in DATASET_TEMPLATE_FIELDS)) from None


def _content_fields(spec: _Entry, rel: str) -> dict:
    """The template fields of one content image; for a shard's member ``wds/x.tar/key.jpg``
    the folder is the member's inside the shard ('' here), the path ``x/key``."""
    if not spec.shards:
        reldir, name = rel.rpartition("/")[::2]
        relpath = os.path.splitext(rel)[0]
        return {"content_reldir": reldir, "content_relpath": relpath, "content_stem": os.path.splitext(name)[0],
                "key": relpath, "shard_stem": "", "shard": ""}
    shard_rel, _, member = rel.partition(webdataset.SUFFIX + "/")
    key = webdataset.split_key(member)[0]
    stem = shard_rel.rpartition("/")[2]
    return {"content_reldir": key.rpartition("/")[0], "content_relpath": f"{stem}/{key}",
            "content_stem": key.rpartition("/")[2], "key": key, "shard_stem": stem,
            "shard": shard_rel + webdataset.SUFFIX}


def _output(template: str, fields: dict, spec: _Entry, many_styles: bool, rel: str) -> str:
    """The template filled in; for an output shard (a template ending in .tar), the sample's
    member in it: ``<shard>/<key>[_<style>][_<variant>].<format>``."""
    output = _fill(template, fields)
    if not output.lower().endswith(webdataset.SUFFIX):
        return output
    name = (fields["key"] + (f"_{fields['style_stem']}" if many_styles else "")
            + (f"_{fields['variant']}" if spec.variants > 1 else ""))
    ext = spec.format or os.path.splitext(rel)[1].lower().lstrip(".")
    return f"{output}/{name}.{ext if ext in SAMPLE_FORMATS else 'png'}"


def _dataset_jobs(spec: _Entry, contents: list[str], pool, template: str, params: StyleParams,
                  root: str) -> list[DatasetJob]:
    seeded = [dataclasses.replace(params, seed=params.seed + v) if v else params for v in range(spec.variants)]
    many_styles = spec.assign == "each" and len(pool) > 1
    jobs: list[DatasetJob] = []
    for number, rel in enumerate(contents):
        fields = _content_fields(spec, rel)
        label = rel.split("/")[0] if "/" in rel and not spec.shards else ""
        for style, variant in _picks(spec, params.seed, number, rel, len(pool)):
            name = pool[style][0]
            filled = {**fields, "style_stem": Path(name).stem, "variant": variant, "index": len(jobs), "id": "{id}"}
            output = _output(template, filled, spec, many_styles, rel)
            masks = {key: _fill(mask, filled) for key, mask in spec.masks.items()}
            jobs.append(DatasetJob(os.path.join(spec.folder, rel).replace(os.sep, "/"), rel, variant,
                                   pool[style], output, seeded[variant], Origin(rel, name, variant, root, label),
                                   masks))
    if len({job.output for job in jobs}) < len(jobs) and "{id}" not in template:
        raise EntryError(f"output {template!r} gives several jobs one file; use {{content_reldir}},"
                         " {content_stem}, {variant} or {style_stem} in it")
    return jobs


def _sidecars(spec: _Entry, files: list[str], out_base: Path, template: str, at: tuple[str, int]) -> list[Copy]:
    if not spec.copy_patterns:
        return []
    copy_folder = _copy_folder_template(template)
    copies = []
    for rel in files:
        name = rel.rpartition("/")[2]
        if any(fnmatch.fnmatchcase(name.lower(), p) for p in spec.copy_patterns):
            folder = copy_folder.format(content_reldir=rel.rpartition("/")[0])
            copies.append(Copy(spec.root / rel, Path(os.path.normpath(out_base / folder / name)), f"{at[0]} ({rel})",
                               at[1]))
    return copies


def _shard_contents(spec: _Entry) -> tuple[list[str], dict[str, dict[str, str]], list[str]]:
    """The image members of the entry's shards as ``<shard>/<member>`` relative to its root,
    each sample's other members (its sidecars: extension -> member name), and a problem per
    refused member, cut shard or sample without an image."""
    image_exts = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]
    contents, sidecars, problems = [], {}, []
    for shard in spec.shards:
        try:
            found = webdataset.index(shard)
        except NstbatchError as e:
            problems.append(f"{e} (its samples are left out)")
            continue
        problems += found.problems
        shard_rel = os.path.relpath(shard, spec.root).replace(os.sep, "/")
        lacking = []
        for sample in found.samples:
            image = sample.image(image_exts)
            if image is None:
                lacking.append(sample.key)
                continue
            rel = f"{shard_rel}/{image}"
            contents.append(rel)
            sidecars[rel] = {ext: name for ext, name in sample.members.items() if name != image}
        if lacking:
            problems.append(f"{shard}: {len(lacking)} sample(s) have no image member"
                            f" ({', '.join(lacking[:3])}{', …' if len(lacking) > 3 else ''}); left out")
    return contents, sidecars, problems


def _shard_sidecars(spec: _Entry, jobs: list[DatasetJob], sidecars: dict[str, dict[str, str]], out_base: Path,
                    at: tuple[str, int]) -> list[Copy]:
    """A shard sample's members named by ``copy`` (an extension, ``cls``, or a pattern,
    ``*.cls``), beside each of its outputs, with the output's name and their extension."""
    copies = []
    for job in jobs:
        shard_rel = job.relpath.partition(webdataset.SUFFIX + "/")[0] + webdataset.SUFFIX
        for ext, name in sidecars.get(job.relpath, {}).items():
            if any(ext == p or fnmatch.fnmatchcase(name.lower(), p) for p in spec.copy_patterns):
                target = os.path.splitext(job.output)[0] + "." + ext
                copies.append(Copy(webdataset.member_path(spec.root / shard_rel, name),
                                   Path(os.path.normpath(out_base / target)), f"{at[0]} ({job.relpath})", at[1]))
    return copies


def expand(base: Path, out_base: Path, at: tuple[str, int], entry: dict, params: StyleParams,
           probe) -> Expanded:
    """Expand one dataset entry (already checked for unknown keys) at ``at`` (where, line in
    the manifest). ``probe(path)`` raises ``NstbatchError`` for a style that cannot be used:
    it is left out of the pool, and said."""
    spec = _read_entry(base, entry)
    pool, problems = _usable_pool(base, entry["style_pool"], probe)
    if spec.shards:
        files, (contents, sidecars, refused) = [], _shard_contents(spec)
        problems += refused
    else:
        files = walk(spec.root)
        contents = [rel for rel in files if is_image_name(rel)]
    if not contents:
        raise EntryError(f"dataset {'shards have' if spec.shards else f'folder {spec.root} has'} no images"
                         f" ({', '.join(IMAGE_SUFFIXES[:4])}, …)" + (f": {'; '.join(problems)}" if problems else ""))
    template = _output_template(entry, spec, len(pool))
    if spec.copy_patterns and not spec.shards:
        _copy_folder_template(template)  # refused before any job is made
    outputs_root = os.path.normpath(out_base / template.split("{", 1)[0]) if "{" in template else None
    if outputs_root and (outputs_root + os.sep).startswith(str(spec.root) + os.sep) and not spec.shards:
        raise EntryError(f"outputs go into the dataset folder {spec.root}: the next run would stylize them"
                         " too; put them in another folder (output_dir or the output template)")
    jobs = _dataset_jobs(spec, contents, pool, template, params, _metadata_root(out_base, template))
    if spec.shards:
        _check_output_shards(base, entry["dataset"], spec, {os.path.normpath(out_base / job.output) for job in jobs})
    copies = (_shard_sidecars(spec, jobs, sidecars, out_base, at) if spec.shards and spec.copy_patterns
              else _sidecars(spec, files, out_base, template, at))
    return Expanded(jobs, copies, problems, pool)


def _check_output_shards(base: Path, value, spec: _Entry, outputs: set[str]) -> None:
    """Output shards that the entry's own patterns name would be stylized again next run."""
    inputs = {str(path) for path in spec.shards}
    patterns = [os.path.normpath(base / os.path.expanduser(name)) for text in _shard_texts(value)
                for name in webdataset.brace_expand(text)]
    for shard in sorted({str(webdataset.split(output)[0]) for output in outputs if webdataset.is_member(output)}):
        if shard in inputs or any(fnmatch.fnmatchcase(shard, pattern) for pattern in patterns):
            raise EntryError(f"the output shard {shard} is also named by dataset: the next run would stylize"
                             " it too; write the outputs to another folder (output_dir or the output template)")


def _metadata_root(out_base: Path, template: str) -> str:
    """The folder above every output of a template: its text before the first field, up to
    its last slash (``out/{content_reldir}/x.png`` -> ``out``)."""
    fixed = template.split("{", 1)[0]
    return os.path.normpath(out_base / fixed.rpartition("/")[0]) if "/" in fixed else os.path.normpath(out_base)


def copy_file(copy: Copy) -> bool:
    """Copy a sidecar file unless an identical copy is there (same size and modification time,
    which the copy keeps); atomically, as outputs are. True when it copied. A shard's member
    is copied unless the same bytes are there."""
    if webdataset.is_member(copy.source):
        data = webdataset.read(copy.source)
        try:
            if copy.target.read_bytes() == data:
                return False
        except FileNotFoundError:
            pass
        copy.target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(copy.target, lambda out: out.write(data))
        return True
    source = os.stat(copy.source)
    try:
        target = os.stat(copy.target)
        if target.st_size == source.st_size and target.st_mtime_ns == source.st_mtime_ns:
            return False
    except FileNotFoundError:
        pass
    copy.target.parent.mkdir(parents=True, exist_ok=True)
    with open(copy.source, "rb") as f:
        atomic_write(copy.target, lambda out: shutil.copyfileobj(f, out))
    os.utime(copy.target, ns=(source.st_atime_ns, source.st_mtime_ns))
    return True
