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
from dataclasses import dataclass
from pathlib import Path

from .config import StyleParams
from .errors import NstbatchError
from .images import atomic_write

# Files recognised as images in a dataset folder or a style pool (case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
ASSIGNS = ("random", "cycle", "each")
DATASET_KEYS = ("dataset", "style_pool", "variants", "assign", "output", "copy")
DATASET_TEMPLATE_FIELDS = ("content_reldir", "content_relpath", "content_stem", "style_stem",
                           "variant", "id", "index")


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
class DatasetJob:
    """One job of a dataset entry, before it gets its id."""

    content: str  # the content's path as the manifest would name it (dataset folder / relpath)
    relpath: str  # relative to the dataset folder, with '/'
    variant: int
    style: tuple[str, Path]  # (its label in the pool, its path)
    output: str  # the template filled in; "{id}" still to be replaced by the job's id
    params: StyleParams  # the entry's, with the variant's seed


@dataclass(frozen=True)
class Expanded:
    """What one dataset entry becomes: its jobs, the sidecars, and problems of single files
    (a broken painting)."""

    jobs: list[DatasetJob]
    copies: list[Copy]
    problems: list[str]


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

    folder: str  # as written
    root: Path
    variants: int
    assign: str
    copy_patterns: list[str]


def _read_entry(base: Path, entry: dict) -> _Entry:
    folder = entry.get("dataset")
    if not isinstance(folder, str) or not folder.strip():
        raise EntryError(f"dataset must be a folder, got {folder!r}")
    root = Path(os.path.normpath(base / os.path.expanduser(folder.strip())))
    if not root.is_dir():
        raise EntryError(f"dataset folder {root} does not exist" if not root.exists()
                         else f"dataset {root} is a file, not a folder (for one image, use content:)")
    if "style_pool" not in entry or entry["style_pool"] in (None, "", []):
        raise EntryError("a dataset entry needs style_pool: a folder, a glob or a list of paintings")
    variants = entry.get("variants", 1)
    if isinstance(variants, bool) or not isinstance(variants, int) or not 1 <= variants <= 1000:
        raise EntryError(f"variants must be a whole number from 1 to 1000, got {variants!r}")
    assign = entry.get("assign", "random")
    if assign not in ASSIGNS:
        raise EntryError(f"assign must be one of {', '.join(ASSIGNS)}, got {assign!r}")
    patterns = [p.lower() for p in _texts(entry["copy"], "copy")] if entry.get("copy") else []
    return _Entry(folder.strip(), root, variants, assign, patterns)


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
        many_styles = spec.assign == "each" and pool_size > 1
        return ("{content_reldir}/{content_stem}" + ("_{style_stem}" if many_styles else "")
                + ("_{variant}" if spec.variants > 1 else "") + ".png")
    if not isinstance(template, str) or not template.strip():
        raise EntryError(f"output must be a file name template, got {template!r}")
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


def _dataset_jobs(spec: _Entry, contents: list[str], pool, template: str, params: StyleParams) -> list[DatasetJob]:
    seeded = [dataclasses.replace(params, seed=params.seed + v) if v else params for v in range(spec.variants)]
    jobs: list[DatasetJob] = []
    for number, rel in enumerate(contents):
        reldir, name = rel.rpartition("/")[::2]
        for style, variant in _picks(spec, params.seed, number, rel, len(pool)):
            label = pool[style][0]
            output = _fill(template, {"content_reldir": reldir, "content_relpath": os.path.splitext(rel)[0],
                                      "content_stem": os.path.splitext(name)[0], "style_stem": Path(label).stem,
                                      "variant": variant, "index": len(jobs), "id": "{id}"})
            jobs.append(DatasetJob(os.path.join(spec.folder, rel).replace(os.sep, "/"), rel, variant,
                                   pool[style], output, seeded[variant]))
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


def expand(base: Path, out_base: Path, at: tuple[str, int], entry: dict, params: StyleParams,
           probe) -> Expanded:
    """Expand one dataset entry (already checked for unknown keys) at ``at`` (where, line in
    the manifest). ``probe(path)`` raises ``NstbatchError`` for a style that cannot be used:
    it is left out of the pool, and said."""
    spec = _read_entry(base, entry)
    pool, problems = _usable_pool(base, entry["style_pool"], probe)
    files = walk(spec.root)
    contents = [rel for rel in files if is_image_name(rel)]
    if not contents:
        raise EntryError(f"dataset folder {spec.root} has no images ({', '.join(IMAGE_SUFFIXES[:4])}, …)")
    template = _output_template(entry, spec, len(pool))
    if spec.copy_patterns:
        _copy_folder_template(template)  # refused before any job is made
    jobs = _dataset_jobs(spec, contents, pool, template, params)
    outputs_root = os.path.normpath(out_base / template.split("{", 1)[0]) if "{" in template else None
    if outputs_root and (outputs_root + os.sep).startswith(str(spec.root) + os.sep):
        raise EntryError(f"outputs go into the dataset folder {spec.root}: the next run would stylize them"
                         " too; put them in another folder (output_dir or the output template)")
    return Expanded(jobs, _sidecars(spec, files, out_base, template, at), problems)


def copy_file(copy: Copy) -> bool:
    """Copy a sidecar file unless an identical copy is there (same size and modification time,
    which the copy keeps); atomically, as outputs are. True when it copied."""
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
