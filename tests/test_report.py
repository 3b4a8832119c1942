"""Seeing a run (issue 9): the HTML report, opened in a real headless browser, and the contact sheet."""
import os
import re

import numpy as np
import pytest
from PIL import Image

from nstbatch.cli import main
from tests.conftest import CSV_HEADER, pattern

# Debian's chromium, driven by Playwright without a browser download of its own.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    import shutil

    return next((path for name in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if (path := shutil.which(name))), None)


def artifacts_dir():
    """Where tests keep what a person may want to look at afterwards (gitignored)."""
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "test-artifacts"
    folder.mkdir(exist_ok=True)
    return folder


def row(job_id, content, style, output, steps=4, seed=0):
    return f'{job_id},{content},{style},{output},32,{steps},relu2_2,"relu1_1,relu2_1",{seed}\n'


@pytest.fixture
def finished_run(tmp_path, capsys):
    """Three jobs run, one of which failed (a PNG whose pixels are cut off), one never run."""
    for i in range(2):
        Image.fromarray(pattern(48, 40, phase=i), "RGB").save(tmp_path / f"c{i}.png")
    Image.fromarray(pattern(40, 40, phase=5)[:, ::-1].copy(), "RGB").save(tmp_path / "s.png")
    Image.fromarray(pattern(200, 200), "RGB").save(tmp_path / "broken.png")
    (tmp_path / "broken.png").write_bytes((tmp_path / "broken.png").read_bytes()[:400])
    rows = [row("a", "c0.png", "s.png", "out/a.png"), row("b", "c1.png", "s.png", "out/b.png", seed=1),
            row("bad <script>", "broken.png", "s.png", "out/bad.png")]
    (tmp_path / "m.csv").write_text(CSV_HEADER + "".join(rows))
    assert main(["run", "--in-process", str(tmp_path / "m.csv"), "--targets", "torch", "-q"]) == 1
    (tmp_path / "m.csv").write_text(CSV_HEADER + "".join(rows) + row("later", "c1.png", "c0.png", "out/later.png"))
    capsys.readouterr()
    return tmp_path


def state_files(folder) -> dict[str, int]:
    """Every file of the run's state directory with its mtime: what a read-only command may not change."""
    state = folder / ".nstbatch" / "m.csv"
    return {str(p.relative_to(state)): p.stat().st_mtime_ns for p in state.rglob("*")}


def test_the_report_is_one_self_contained_page_with_failures_first(finished_run, capsys, tmp_path_factory,
                                                                   monkeypatch):
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("NSTBATCH_CACHE", str(cache))
    before = state_files(finished_run)
    page = finished_run / "report" / "run.html"
    assert main(["report", str(finished_run / "m.csv"), "-o", str(page)]) == 0
    assert "4 job(s); done 2, failed 1, invalid 0, pending 1; " in capsys.readouterr().out
    text = page.read_text()
    assert text.index("failed-list") < text.index('class="grid"')
    assert "bad &lt;script&gt;" in text and "<script>" not in text  # ids are escaped
    assert "truncated or corrupt" in text
    sources = re.findall(r'<img src="([^"]*)"', text)
    # a, b: content, style, output; bad: its style (its content cannot be decoded); later: both
    assert len(sources) == 3 + 3 + 1 + 2 and text.count('class="missing"') == 1 + 2
    assert all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)
    assert text.count("<svg") == 2  # a cost curve for each finished job
    thumbs = sorted((cache / "thumbs").iterdir())  # cached under NSTBATCH_CACHE
    stamps = [p.stat().st_mtime_ns for p in thumbs]
    assert len(thumbs) == 5  # c0, c1, s, and the two outputs: each made once
    assert main(["report", str(finished_run / "m.csv"), "-o", str(page)]) == 0
    assert [p.stat().st_mtime_ns for p in thumbs] == stamps  # cached, not made again
    assert main(["report", str(finished_run / "m.csv"), "-o", str(page), "--link"]) == 0
    linked = re.findall(r'<img src="([^"]*)"', page.read_text())
    assert linked and all(s.startswith("run_thumbs/") and (page.parent / s).is_file() for s in linked)
    assert state_files(finished_run) == before  # reading a run writes nothing into its state


@pytest.mark.slow
def test_the_report_opens_in_a_real_browser_with_every_thumbnail_loaded(finished_run):
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("NSTBATCH_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (NSTBATCH_REQUIRE_BROWSER) but not installed")
        pytest.skip("no chromium here (.ci/run installs Debian's package)")
    from playwright.sync_api import sync_playwright

    page_file = finished_run / "report.html"
    assert main(["report", str(finished_run / "m.csv"), "-o", str(page_file)]) == 0
    errors = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_file.as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0}))")
            failed = page.evaluate("Array.from(document.querySelectorAll('.failed-job')).map(e => e.textContent)")
            totals = page.evaluate("document.querySelector('.totals').textContent")
            shot = artifacts_dir() / "report.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert len(images) == 9 and all(i["ok"] for i in images), images
    assert len(failed) == 1 and failed[0].startswith("bad <script>") and "truncated or corrupt" in failed[0]
    assert "done 2" in totals and "failed 1" in totals and "pending 1" in totals
    assert errors == []
    with Image.open(shot) as im:
        assert im.width >= 1000 and im.height >= 300


def test_the_report_adds_up_every_shard_of_a_cluster_run(tmp_path, capsys):
    for i in range(4):
        Image.fromarray(pattern(48, 40, phase=i), "RGB").save(tmp_path / f"c{i}.png")
    (tmp_path / "m.csv").write_text(CSV_HEADER + "".join(row(f"j{i}", f"c{i}.png", "c0.png", f"out/j{i}.png", seed=i)
                                                     for i in range(4)))
    state = tmp_path / "shared-state"
    for shard in ("0/2", "1/2"):
        assert main(["run", "--in-process", str(tmp_path / "m.csv"), "--shard", shard, "--state-dir", str(state),
                     "--targets", "torch", "--no-steal", "-q"]) == 0
    assert sorted(p.name for p in state.glob("report*.jsonl")) == ["report-s0of2.jsonl", "report-s1of2.jsonl"]
    assert main(["report", str(tmp_path / "m.csv"), "-o", str(tmp_path / "r.html"), "--state-dir", str(state)]) == 0
    assert "4 job(s); done 4, failed 0, invalid 0, pending 0" in capsys.readouterr().out
    assert "images/hour" in (tmp_path / "r.html").read_text()


def test_the_contact_sheet_has_one_tile_per_finished_output(finished_run, capsys):
    sheet = finished_run / "sheet.png"
    assert main(["sheet", str(finished_run / "m.csv"), "-o", str(sheet), "--columns", "3", "--tile", "64"]) == 0
    assert "2 output(s)" in capsys.readouterr().out
    with Image.open(sheet) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[:2] == (8 + 64 + 18 + 8, 8 + 2 * (64 + 8))  # one row, two tiles of three columns
    for index in range(2):
        x = 8 + index * (64 + 8)
        tile = pixels[8:8 + 64, x:x + 64]
        caption = pixels[8 + 64:8 + 64 + 18, x:x + 64]
        assert (tile < 250).any(axis=-1).mean() > 0.5  # an image is there
        assert (caption < 128).any()  # and its caption
    os.remove(finished_run / "out" / "a.png")  # an output gone since: no longer done
    assert main(["sheet", str(finished_run / "m.csv"), "-o", str(sheet)]) == 0
    assert "1 output(s)" in capsys.readouterr().out


def test_a_big_run_links_its_thumbnails_instead_of_embedding_them(finished_run, capsys, monkeypatch):
    from nstbatch import report

    monkeypatch.setattr(report, "EMBED_UP_TO", 3)  # the finished run has 4 jobs
    page = finished_run / "r.html"
    assert main(["report", str(finished_run / "m.csv"), "-o", str(page)]) == 0
    assert "thumbnails linked" in capsys.readouterr().out
    sources = re.findall(r'<img src="([^"]*)"', page.read_text())
    assert sources and all(s.startswith("r_thumbs/") for s in sources)
    assert main(["report", str(finished_run / "m.csv"), "-o", str(page), "--embed"]) == 0
    assert all(s.startswith("data:") for s in re.findall(r'<img src="([^"]*)"', page.read_text()))
