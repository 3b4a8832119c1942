"""WebDataset tar shards: read samples in place, address their members, pack outputs.

A *member address* is a path that goes through a ``.tar`` file: ``wds/train-000000.tar/
n01440764_10026.jpg`` names the member ``n01440764_10026.jpg`` of that shard, as a content
image of a manifest row or a dataset entry, and ``out/train-000000.tar/n01440764_10026_1.jpg``
names a sample of an output shard (a path cannot go through a regular file, so the two never
clash with real files). Members are read in place: the shard's headers are scanned once per
process (``index``; its members' data is never read then), and a member's bytes are read on
their own by offset, so memory stays bounded by one member however large the shard.

Samples follow the WebDataset convention: members that share a *key* (the name up to the
first dot of its last part: ``a/b.seg.png`` has key ``a/b`` and extension ``seg.png``) are
one sample; its image member is the content, the others (``.cls``, ``.json``, ``.txt``, ...)
its sidecars. Member names that leave the shard (``../x``, ``/etc/x``) and links are refused,
each named in one problem; a truncated shard keeps the members before the cut.

An output member is written first to a *staging* file beside its shard (``staged``:
``out/.train-000000.tar.staging/<member>``); ``pack`` writes the shard from them atomically.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

from ..errors import InputError
from ..fs import atomic_write

SUFFIX = ".tar"
STAGING = ".staging"
CUT = "is cut short (the shard ends inside it)"


def split(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(shard, member name)`` when ``path`` goes through a name ending in ``.tar`` that is
    not a folder; None for an ordinary path."""
    text = os.fspath(path)
    lowered = text.lower()
    start = 0
    while (at := lowered.find(SUFFIX + os.sep, start)) != -1:
        shard = text[:at + len(SUFFIX)]
        if not os.path.isdir(shard):
            return Path(shard), text[at + len(SUFFIX) + 1:].replace(os.sep, "/")
        start = at + 1
    return None


def is_member(path: str | os.PathLike) -> bool:
    return split(path) is not None


def member_path(shard: str | os.PathLike, name: str) -> Path:
    return Path(shard, *name.split("/"))


def split_key(name: str) -> tuple[str, str] | None:
    """WebDataset's rule: ``dir/key.ext.more`` -> ``("dir/key", "ext.more")``; None without a dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def unsafe_name(name: str) -> str | None:
    """Why a member name may not be used (it would leave the shard), or None."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return "an absolute or malformed name"
    if ".." in name.split("/"):
        return "a name that climbs out of the shard (..)"
    return None


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of its data in the shard file
    size: int


@dataclass(frozen=True)
class Sample:
    """One key's members, in the shard's order."""

    key: str
    members: dict[str, str]  # extension -> member name

    def image(self, image_exts: Iterable[str]) -> str | None:
        """The member that is the sample's image: the first whose whole extension is an image's."""
        exts = set(image_exts)
        return next((name for ext, name in self.members.items() if ext in exts), None)


@dataclass
class Index:
    """What a scan of a shard's headers found."""

    shard: Path
    members: dict[str, Member] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per refused or cut member


def _stat_key(path: Path) -> tuple:
    stat = os.stat(path)
    return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def index(shard: str | os.PathLike) -> Index:
    """The shard's members and samples (cached while its size, mtime and inode are unchanged).
    Raises ``InputError`` when it is no tar at all."""
    return _index(_stat_key(Path(shard)))


@functools.lru_cache(maxsize=256)
def _index(key: tuple) -> Index:
    path, size = Path(key[0]), key[1]
    found = Index(path)
    keys: dict[str, dict[str, str]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            while True:
                try:
                    info = tar.next()
                except (tarfile.ReadError, EOFError) as e:
                    if not (found.problems and found.problems[-1].endswith(CUT)):  # said once
                        found.problems.append(f"{path}: the shard is cut short after"
                                              f" {len(found.members)} members ({e}); the rest is lost")
                    break
                if info is None:
                    break
                tar.members.clear()  # headers are not kept: memory stays bounded
                _add(found, keys, info, size)
    except tarfile.ReadError as e:
        raise InputError(f"{path}: not a tar file ({e})", hint="WebDataset shards are plain .tar files") from None
    found.samples = [Sample(k, members) for k, members in keys.items()]
    return found


def _add(found: Index, keys: dict[str, dict[str, str]], info: tarfile.TarInfo, size: int) -> None:
    where = f"{found.shard}/{info.name}"
    if info.isdir():
        return
    if (why := unsafe_name(info.name)) is not None:
        found.problems.append(f"{found.shard}: member {info.name!r} is refused: {why}")
        return
    if info.issym() or info.islnk():
        found.problems.append(f"{where}: is a link, refused (a shard's members must be regular files)")
        return
    if not info.isreg():
        found.problems.append(f"{where}: is no regular file, refused")
        return
    if info.offset_data + info.size > size:
        found.problems.append(f"{where}: {CUT}")
        return
    found.members[info.name] = Member(info.name, info.offset_data, info.size)
    split_name = split_key(info.name)
    if split_name is not None:
        keys.setdefault(split_name[0], {}).setdefault(split_name[1], info.name)


def _member(path: str | os.PathLike) -> tuple[Path, Member]:
    parts = split(path)
    if parts is None:
        raise InputError(f"{path}: not a member of a .tar shard")
    shard, name = parts
    if not shard.is_file():
        raise InputError(f"{shard}: no such shard", hint="check the path")
    member = index(shard).members.get(name)
    if member is None:
        raise InputError(f"{path}: no member {name!r} in {shard.name}", hint="list it with: tar tf " + str(shard))
    return shard, member


def member_stat(path: str | os.PathLike) -> tuple:
    """What identifies a member's content cheaply: its shard's size, mtime and inode, and its
    place in it (a rewritten shard is read again)."""
    shard, member = _member(path)
    return (*_stat_key(shard), member.offset, member.size)


def read(path: str | os.PathLike) -> bytes:
    """A member's bytes, read on their own."""
    shard, member = _member(path)
    with open(shard, "rb") as f:
        f.seek(member.offset)
        data = f.read(member.size)
    if len(data) != member.size:
        raise InputError(f"{path}: the shard changed while it was read", hint="run again")
    return data


def open_member(path: str | os.PathLike) -> BinaryIO:
    return io.BytesIO(read(path))


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(read(path)).hexdigest()


# --- outputs: staged per member, packed per shard -------------------------------------------

def staged(path: str | os.PathLike) -> Path:
    """Where an output member is written before its shard is packed; ordinary paths are
    their own."""
    parts = split(path)
    if parts is None:
        return Path(path)
    shard, name = parts
    return staging_folder(shard).joinpath(*name.split("/"))


def locate(path: str | os.PathLike) -> Path:
    """Where an output is now: its staged file while it waits to be packed, else itself."""
    staged_path = staged(path)
    return staged_path if staged_path != Path(path) and staged_path.is_file() else Path(path)


def staging_folder(shard: Path) -> Path:
    return shard.with_name(f".{shard.name}{STAGING}")


def output_folder(path: str | os.PathLike) -> Path:
    """The folder an output lands in: a member's is its shard's."""
    parts = split(path)
    return (parts[0] if parts else Path(path)).parent


@dataclass(frozen=True)
class Entry:
    """One member of a shard being packed: its bytes come from ``source`` (a staged file or
    a member address) or are ``data``."""

    name: str
    source: Path | None = None
    data: bytes | None = None


def pack(shard: Path, entries: list[Entry], mtime: float = 0.0) -> None:
    """Write ``shard`` from ``entries`` atomically (a temp file beside it, then
    ``os.replace``): a reader sees the old shard or the whole new one. Each member is streamed."""

    def write(f) -> None:
        with tarfile.open(fileobj=f, mode="w") as tar:  # PAX: long member names are kept whole
            for entry in entries:
                info = tarfile.TarInfo(entry.name)
                info.mtime, info.mode = mtime, 0o644
                if entry.data is not None:
                    info.size = len(entry.data)
                    tar.addfile(info, io.BytesIO(entry.data))
                elif split(entry.source) is not None:
                    data = read(entry.source)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    with open(entry.source, "rb") as source:
                        info.size = os.fstat(source.fileno()).st_size
                        tar.addfile(info, source)

    shard.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(shard, write)


def brace_expand(pattern: str) -> list[str]:
    """The WebDataset shard convention ``train-{000000..000146}.tar`` (and ``{a,b}``)."""
    from braceexpand import braceexpand

    return list(braceexpand(pattern))
