"""Looking at a run: one self-contained HTML page (``nstbatch report``) and a contact sheet of
the outputs (``nstbatch sheet``), both rendering what the ledger says of the manifest's jobs
(``batch.views.status``: every shard's report), at any point of a run.

Thumbnails are made once per image version (``<hash of path, size and mtime>.jpg``): cached
under ``NSTBATCH_CACHE``/thumbs/ and embedded in the page, or with ``link`` written into a
folder beside the page (``<page>_thumbs/``) that it refers to, so it needs no server and loads
nothing else. Reading a run writes nothing into its state directory.
"""
from __future__ import annotations

import base64
import hashlib
import html
import math
import os
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .io import webdataset
from .config import PRESETS
from .errors import NstbatchError
from .fs import atomic_write
from .io.images import save_image
from .io.video import still
from .io.manifest import Job
from .environment import cache_root
from .jobs.ledger import RATE_LABEL, JobState
from .jobs.views import RunView, status

THUMB_SIDE = 160
EMBED_UP_TO = 300  # jobs; a bigger run's page refers to the cached thumbnails instead


def thumbs_folder(page: str | os.PathLike) -> Path:
    """Where a linked page's thumbnails go: ``report_thumbs/`` beside ``report.html``."""
    page = Path(page)
    return page.with_name(page.stem + "_thumbs")


def thumbnail(folder: Path, path: Path, side: int = THUMB_SIDE) -> Path | None:
    """A JPEG of ``path`` with its long side ``side`` in ``folder``, made once per version of
    the file."""
    path = webdataset.locate(path)
    try:
        stat = None if webdataset.is_member(path) else path.stat()
        version = webdataset.member_stat(path) if stat is None else (stat.st_size, stat.st_mtime_ns)
    except (OSError, NstbatchError):
        return None
    key = hashlib.sha256(f"{path.resolve()}|{version}|{side}".encode()).hexdigest()[:24]
    thumb = folder / f"{key}.jpg"
    if thumb.is_file():
        return thumb
    try:
        image = still(path)  # an image, or a clip's first frame
    except Exception:  # noqa: BLE001 - an unreadable input has no thumbnail, and says so
        return None
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    thumb.parent.mkdir(parents=True, exist_ok=True)
    save_image(image, thumb)
    return thumb


def cost_curve(history: list[tuple[int, float]], width: int = 180, height: int = 48) -> str:
    """The total cost over the steps as a small inline SVG (log scale)."""
    points = [(s, t) for s, t in history if t > 0 and math.isfinite(t)]
    if len(points) < 2:
        return ""
    steps = [s for s, _ in points]
    logs = [math.log10(t) for _, t in points]
    s0, s1 = min(steps), max(steps) or 1
    l0, l1 = min(logs), max(logs)
    span_s, span_l = (s1 - s0) or 1, (l1 - l0) or 1
    xy = " ".join(f"{2 + (s - s0) / span_s * (width - 4):.1f},{2 + (l1 - l) / span_l * (height - 4):.1f}"
                  for s, l in zip(steps, logs))
    first, last = points[0][1], points[-1][1]
    return (f'<svg class="curve" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="total cost from {first:.4g} to {last:.4g}">'
            f'<title>total cost {first:.4g} → {last:.4g} over {s1} steps (log scale)</title>'
            f'<rect width="{width}" height="{height}" fill="#f6f6f6"/>'
            f'<polyline points="{xy}" fill="none" stroke="#c0392b" stroke-width="1.5"/></svg>')


def _ran_by(v) -> str:
    """Which task of an array ran a done job: 'shard 2/3', or 'shard 2/3, helping shard 1'."""
    from .jobs.shards import Shard

    ran = Shard.from_tag(v.shard)
    if ran is None:
        return ""
    owner = Shard.owner(v.job.id, ran.count).index
    return f"shard {ran.index}/{ran.count}" + (f", helping shard {owner}" if owner != ran.index else "")


def _changed_params(job: Job) -> str:
    """The preset and whatever the job sets differently from it."""
    params = job.params
    preset = PRESETS[params.preset].to_dict()
    shown = [f"preset {params.preset}"]
    for name, value in params.to_dict().items():
        if name != "preset" and value != preset[name]:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            shown.append(f"{name} {text}")
    return "; ".join(shown)


class _Images:
    """``<img>`` sources: data URIs (self-contained) or paths relative to the page."""

    def __init__(self, page: Path, link: bool):
        self.page, self.link = page, link
        self.folder = thumbs_folder(page) if link else cache_root() / "thumbs"

    def tag(self, path: Path, alt: str) -> str:
        thumb = thumbnail(self.folder, path)
        if thumb is None:
            return f'<div class="missing" title="{html.escape(str(path))}">no image</div>'
        if self.link:
            src = Path(os.path.relpath(thumb, self.page.parent)).as_posix()
        else:
            src = "data:image/jpeg;base64," + base64.b64encode(thumb.read_bytes()).decode()
        return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" title="{html.escape(str(path))}">'


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} .sub{color:#666;margin-bottom:16px}
.totals span{display:inline-block;margin-right:18px;font-weight:600}
.failed-list{border:1px solid #e0b4b4;background:#fff6f6;padding:8px 12px;margin:16px 0}
.failed-list li{margin:4px 0} .failed-list code{white-space:pre-wrap}
.grid{display:flex;flex-wrap:wrap;gap:14px}
.job{border:1px solid #ddd;border-radius:6px;padding:8px;min-width:520px;max-width:720px}
.job.failed,.job.invalid{border-color:#d33} .job.done{border-color:#8c8}
.row{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
.row figure{margin:0;width:166px;text-align:center;font-size:11px;color:#666}
.row img{max-width:160px;max-height:160px;display:block;margin:auto}
.missing{width:160px;height:100px;background:#eee;color:#999;display:flex;align-items:center;justify-content:center}
.meta{font-size:12px;color:#444;margin-top:6px} .status{font-weight:700}
.status.done{color:#2a7} .status.failed,.status.invalid{color:#c22} .status.pending,.status.running,.status.interrupted{color:#a80}
"""


def render_html(view: RunView, page: Path, link: bool = False) -> str:
    images = _Images(page, link)
    esc = html.escape
    bad = [v for v in view.jobs if v.status.is_failure]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>nstbatch report: {esc(view.manifest.name)}</title><style>{STYLE}</style></head><body>",
             f"<h1>nstbatch report: {esc(view.manifest.name)}</h1>",
             f'<div class="sub">{esc(str(view.manifest))} · state {esc(str(view.state.root))} · '
             f'made {time.strftime("%Y-%m-%d %H:%M:%S")}</div>']
    rate = f"{view.images_per_hour:.1f}" if view.images_per_hour else "–"
    parts.append('<div class="totals">' + "".join(
        f'<span class="total-{word}">{word} {n}</span>' for word, n in view.totals() + [("jobs", len(view.jobs))])
        + f'<span class="total-rate">{RATE_LABEL} {rate}</span></div>')
    if bad or view.problems:
        parts.append('<div class="failed-list"><strong>Failed or invalid</strong><ul>')
        for v in bad:
            parts.append(f'<li class="failed-job" id="failed-{esc(v.job.id)}"><b>{esc(v.job.id)}</b> '
                         f'({esc(v.job.where)}, {v.status}): <code>{esc(v.error or "")}</code></li>')
        for p in view.problems:
            parts.append(f'<li class="failed-row"><b>{esc(p.where)}</b>: <code>{esc(p.message)}</code></li>')
        parts.append("</ul></div>")
    parts.append('<div class="grid">')
    for v in sorted(view.jobs, key=lambda v: not v.status.is_failure):
        job = v.job
        styles = " + ".join(f"{p.name}×{w:g}" if len(job.styles) > 1 else p.name for p, w in job.styles)
        figures = [(job.content, f"content · {job.content.name}")]
        figures += [(p, f"style · {p.name}") for p, _ in job.styles]
        figures.append((job.output, f"output · {job.output.name}"))
        cells = ""
        for path, caption in figures:
            shown = (images.tag(path, caption) if path != job.output or v.status == JobState.DONE
                     else f'<div class="missing">{esc(v.status)}</div>')
            cells += f"<figure>{shown}<figcaption>{esc(caption)}</figcaption></figure>"
        costs = (f"total {v.costs['total']:.4g} · content {v.costs['content']:.4g} · style {v.costs['style']:.4g}"
                 if v.costs else "")
        seconds = f"{v.seconds:.1f} s" if v.seconds is not None else ""
        parts.append(
            f'<div class="job {v.status}" id="job-{esc(job.id)}"><div class="row">{cells}</div>'
            f'<div class="meta"><span class="status {v.status}">{v.status}</span> · <b>{esc(job.id)}</b> '
            f'({esc(job.where)}) · style {esc(styles)}<br>{esc(_changed_params(job))}<br>'
            f'{esc(" · ".join(x for x in (seconds, costs, v.device or "", _ran_by(v), f"{v.attempts} attempt(s)" if v.attempts else "") if x))}'
            f'{"<br><code>" + esc(v.error) + "</code>" if v.error else ""}'
            f'{"<br><i>" + esc(v.note) + "</i>" if v.note else ""}</div>'
            f"{cost_curve(v.history)}</div>")
    parts.append("</div></body></html>\n")
    return "".join(parts)


def write_report(manifest: str | os.PathLike, out: str | os.PathLike, state_dir=None,
                 link: bool | None = None, overrides: dict[str, str] | None = None) -> RunView:
    """``link``: None embeds the thumbnails for up to ``EMBED_UP_TO`` jobs and links them beyond
    (a page of thousands of embedded images would be hundreds of megabytes). ``overrides``: the
    run's ``--set`` parameters."""
    out = Path(out)
    view = status(manifest, state_dir, overrides=overrides)
    if link is None:
        link = len(view.jobs) > EMBED_UP_TO
    view.linked = link
    text = render_html(view, out.resolve(), link).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: f.write(text))
    return view


def contact_sheet(view: RunView, columns: int = 6, tile: int = 256) -> Image.Image | None:
    """A grid of the finished outputs, each captioned with its job id; None when none is done."""
    done = [v for v in view.jobs if v.status == JobState.DONE]
    if not done:
        return None
    font = ImageFont.load_default()
    caption = 18
    columns = max(1, min(columns, len(done)))
    rows = math.ceil(len(done) / columns)
    sheet = Image.new("RGB", (columns * (tile + 8) + 8, rows * (tile + caption + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for index, v in enumerate(done):
        x = 8 + (index % columns) * (tile + 8)
        y = 8 + (index // columns) * (tile + caption + 8)
        image = still(webdataset.locate(v.job.output))
        scale = tile / max(image.size)  # fit the tile, small outputs enlarged too
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
        sheet.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
        text = v.job.id if len(v.job.id) <= tile // 7 else v.job.id[: tile // 7 - 1] + "…"
        draw.text((x, y + tile + 3), text, fill="black", font=font)
    return sheet


def write_sheet(manifest, out, state_dir=None, columns: int = 6, tile: int = 256,
                overrides: dict[str, str] | None = None) -> int:
    """Write the contact sheet; the number of tiles (0: nothing done, nothing written)."""
    view = status(manifest, state_dir, check_files=False, overrides=overrides)
    sheet = contact_sheet(view, columns, tile)
    if sheet is None:
        return 0
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_image(sheet, out)
    return view.count(JobState.DONE)
