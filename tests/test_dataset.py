"""Dataset entries: a folder tree and a style pool expanded into jobs, deterministically;
sidecars, broken files, the exported plan, and mixed-style batches equal to solo runs."""
import csv
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nstbatch.cli import main
from nstbatch.io.dataset import draw, walk
from nstbatch.io.images import read_provenance
from nstbatch.io.manifest import read_manifest
from nstbatch.io.validate import validate
from tests.conftest import ROOT


def _samples():
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "manifests" / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ENTRY = """\
output_dir: out
defaults: {{size: 32, steps: 3, precision: fp32, crop: center}}
jobs:
  - dataset: photos/
    style_pool: paintings/
    variants: 2
    seed: 7
    output: "stylized/{{content_reldir}}/{{content_stem}}_{{variant}}.{ext}"
    copy: ["*.xml", "*.txt"]
"""
# The drawn tree (manifests/make_samples.py --tree), as the outputs mirror it.
EXPECTED = sorted([f"stylized/{stem}_{v}.{{ext}}" for stem in ("cat/c1", "cat/c2", "dog/c1", "dog/puppies/p1")
                   for v in (0, 1)] + ["stylized/README.txt", "stylized/cat/c1.xml", "stylized/cat/c2.xml"])


@pytest.fixture
def tree(tmp_path):
    """The drawn tree, a corrupt image among the photos, a broken painting in the pool."""
    _samples().draw_tree(tmp_path, side=48)
    (tmp_path / "photos" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "paintings" / "torn.png").write_bytes(b"not an image at all")
    return tmp_path


def write(tree, ext="png", **changes) -> Path:
    text = ENTRY.format(ext=ext)
    for key, value in changes.items():
        text = text.replace(f"    {key}: ", f"    {key}: {value}  # was: ")
    (tree / "m.yaml").write_text(text)
    return tree / "m.yaml"


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_tree_becomes_mirrored_jobs_and_each_broken_file_one_clear_problem(tree):
    manifest = read_manifest(write(tree))
    outputs = sorted(job.output.relative_to(tree / "out").as_posix() for job in manifest.jobs)
    # Same stems in two folders never collide; the corrupt photo is a job (its probe fails).
    assert sorted(o.replace(".png", ".{ext}") for o in outputs) == sorted(
        [o for o in EXPECTED if o.endswith("{ext}")] + ["stylized/dog/broken_0.{ext}", "stylized/dog/broken_1.{ext}"])
    problems = validate(manifest)
    assert len(problems) == 3  # the painting once, the photo once per variant (two jobs)
    painting = [p for p in problems if "torn.png" in p.message]
    assert len(painting) == 1 and "left out of the pool" in painting[0].message and painting[0].where == "m.yaml:4"
    photo = [p for p in problems if "broken.png" in p.message]
    assert {p.where for p in photo} == {"m.yaml:4 (dog/broken.png, variant 0)", "m.yaml:4 (dog/broken.png, variant 1)"}
    # The broken painting is never assigned; the text file is not a job; the sidecars mirror.
    assert all(style.name != "torn.png" for job in manifest.jobs for style, _ in job.styles)
    assert sorted(c.target.relative_to(tree / "out").as_posix() for c in manifest.copies) == \
        ["stylized/README.txt", "stylized/cat/c1.xml", "stylized/cat/c2.xml"]


def test_skip_invalid_runs_mixed_style_batches_equal_to_solo_runs_and_writes_nothing_else(tree, capsys):
    m = write(tree)
    assert main(["run", str(m), "--in-process", "-q"]) == 2  # invalid: nothing runs
    assert not (tree / "out").exists()
    capsys.readouterr()
    assert main(["run", str(m), "--in-process", "-q", "--skip-invalid", "--batch", "4"]) == 1
    err = capsys.readouterr().err
    assert err.count("torn.png") == 1 and err.count("broken.png") == 2  # one line each
    assert "m.yaml:4 (dog/broken.png, 2 jobs): content: " in err
    # The images, the sidecars and the Hugging Face imagefolder's metadata.jsonl: nothing else.
    assert files_under(tree / "out") == sorted([o.format(ext="png") for o in EXPECTED] + ["stylized/metadata.jsonl"])
    done = [json.loads(p.read_text()) for p in (tree / ".nstbatch" / "m.yaml" / "done").glob("*.json")]
    assert len(done) == 8
    styles = {job.id: job.styles for job in read_manifest(m).jobs}
    mixed = [r for r in done if r["batch"] > 1]
    assert mixed and len({styles[r["id"]] for r in mixed}) > 1  # batches of images with different styles
    batched = {r["output"]: np.asarray(Image.open(r["output"])) for r in done}
    # The same jobs one at a time: the same images (CPU, fp32) up to float rounding, which
    # depends on the batch size with some CPUs' kernels (an AMD EPYC here: one pixel one level).
    assert main(["run", str(m), "--in-process", "-q", "--skip-invalid", "--batch", "1", "--force",
                 "--state-dir", str(tree / "solo")]) == 1
    for output, pixels in batched.items():
        solo = np.asarray(Image.open(output)).astype(int)
        assert np.abs(solo - pixels).max() <= 1 and np.mean(solo != pixels) < 0.01, output
    assert read_provenance(done[0]["output"])["params"]["crop"] == "center"
    assert Image.open(done[0]["output"]).size == (32, 32)


def test_adding_an_image_changes_no_other_row_of_the_exported_plan(tree):
    m = write(tree)
    assert main(["plan", str(m), "--export", str(tree / "before.csv")]) == 1  # problems listed, plan written
    Image.new("RGB", (40, 30), (10, 200, 30)).save(tree / "photos" / "cat" / "c0.png")
    (tree / "paintings" / "torn.png").unlink()
    assert main(["plan", str(m), "--export", str(tree / "after.csv")]) == 1
    before = (tree / "before.csv").read_text().splitlines()
    after = (tree / "after.csv").read_text().splitlines()
    assert len(after) == len(before) + 2 and set(before) < set(after)
    added = [row for row in after if row not in before]
    assert all("photos/cat/c0.png" in row for row in added)


def test_the_exported_plan_regenerates_the_run_and_finds_it_done(tree, capsys):
    (tree / "photos" / "dog" / "broken.png").unlink()
    (tree / "paintings" / "torn.png").unlink()
    m = write(tree, ext="jpg")
    assert main(["run", str(m), "--in-process", "-q"]) == 0
    assert main(["plan", str(m), "--export", str(tree / "plan" / "plan.csv")]) == 0
    rows = list(csv.DictReader(open(tree / "plan" / "plan.csv")))
    assert len(rows) == 8 and {r["seed"] for r in rows} == {"7", "8"}  # noise seed: base + variant
    assert rows[0]["content"].startswith("../photos/")  # relative to the CSV: it travels with the tree
    capsys.readouterr()
    assert main(["run", str(tree / "plan" / "plan.csv"), "--state-dir", str(tree / ".nstbatch" / "m.yaml"),
                 "--dry-run"]) == 0
    assert "0 to run, 8 done" in capsys.readouterr().out


def test_assignment_depends_on_seed_path_and_variant_alone():
    # Pinned: a change here would give every existing dataset other styles.
    assert [draw(7, f"img{i}.jpg", 1, 10)[0] for i in range(8)] == [9, 8, 4, 5, 9, 8, 4, 2]
    assert draw(7, "cat/c1.JPEG", 4, 4) == [3, 0, 1, 2]
    assert draw(7, "cat/c1.JPEG", 2, 4) == [3, 0]  # fewer variants: the same first picks
    assert draw(8, "cat/c1.JPEG", 4, 4) != [3, 0, 1, 2]
    assert sorted(draw(7, "x.png", 4, 4)) == [0, 1, 2, 3]  # variants get distinct styles while they last
    assert draw(7, "x.png", 6, 4)[4:] == draw(7, "x.png", 6, 4)[:2]  # then repeat in order
    picks = [draw(0, f"{i}.jpg", 1, 5)[0] for i in range(500)]
    assert set(picks) == set(range(5)) and max(picks.count(s) for s in range(5)) < 140  # spread out


def test_cycle_and_each_and_the_default_output(tree):
    (tree / "photos" / "dog" / "broken.png").unlink()
    (tree / "paintings" / "torn.png").unlink()
    (tree / "m.yaml").write_text("jobs:\n  - dataset: photos\n    style_pool: [paintings/swirls.png, paintings/dots.png]\n"
                                 "    assign: each\n  - dataset: photos\n    style_pool: paintings/*.png\n"
                                 "    assign: cycle\n    output: cyc/{content_relpath}.webp\n")
    jobs = read_manifest(tree / "m.yaml").jobs
    each = [j for j in jobs if j.where.startswith("m.yaml:2")]
    assert len(each) == 8 and {j.output.name for j in each if "puppies" in str(j.output)} == {"p1_dots.png", "p1_swirls.png"}
    assert each[0].output == tree / "cat" / "c1_dots.png"  # the default mirrors the tree under output_dir
    cycle = [j for j in jobs if j.where.startswith("m.yaml:5")]
    assert [j.styles[0][0].name for j in cycle] == ["dots.png", "mosaic.png", "stripes.png", "swirls.png"]
    assert cycle[3].output == tree / "cyc" / "dog" / "puppies" / "p1.webp"
    assert not validate(read_manifest(tree / "m.yaml"))


@pytest.mark.parametrize("entry, message", [
    ("dataset: nowhere\n    style_pool: paintings", "dataset folder .* does not exist"),
    ("dataset: photos", "needs style_pool"),
    ("dataset: photos\n    style_pool: paintings\n    content: x.png", "not content"),
    ("dataset: photos\n    style_pool: paintings\n    variants: 0", "variants must be"),
    ("dataset: photos\n    style_pool: paintings\n    assign: shuffle", "assign must be one of"),
    ("dataset: photos\n    style_pool: paintings\n    copy: '*.xml'\n    output: '{style_stem}/{content_stem}.png'",
     "may use only"),
    ("dataset: photos\n    style_pool: paintings\n    output: 'photos/x/{content_relpath}.png'", "into the dataset folder"),
    ("dataset: photos\n    style_pool: nothing/*.png", "matches no file"),
    ("dataset: photos\n    style_pool: paintings\n    output: 'out/x.png'", "several jobs one file"),
])
def test_entry_mistakes_are_one_clear_problem_of_their_line(tree, entry, message):
    (tree / "m.yaml").write_text(f"jobs:\n  - {entry}\n")
    manifest = read_manifest(tree / "m.yaml")
    assert not manifest.jobs
    assert len(manifest.problems) == 1 and manifest.problems[0].where == "m.yaml:2"
    import re
    assert re.search(message, manifest.problems[0].message), manifest.problems[0].message


def test_walk_is_sorted_recursive_and_skips_symlinked_folders(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    for rel in ("b/c/z.PNG", "b/a.jpg", "a.JPEG", "b/notes.txt"):
        (tmp_path / rel).write_bytes(b"x")
    os.symlink(tmp_path / "b", tmp_path / "loop")
    assert walk(tmp_path) == ["a.JPEG", "b/a.jpg", "b/c/z.PNG", "b/notes.txt"]


def test_the_readme_dataset_example_is_valid_on_the_drawn_tree(tmp_path):
    readme = (ROOT / "docs" / "datasets.md").read_text()
    section = readme[readme.index("# Stylize a dataset"):]
    example = section[section.index("```yaml\n") + 8:section.index("```\n", section.index("```yaml"))]
    _samples().draw_tree(tmp_path / "data")
    assert (tmp_path / "data" / "stylize.yaml").read_text() == example  # what docs/datasets.md shows is what it draws
    manifest = read_manifest(tmp_path / "data" / "stylize.yaml")
    assert not validate(manifest)
    assert len(manifest.jobs) == 8 and len(manifest.copies) == 3
    assert {job.params.jpeg_quality for job in manifest.jobs} == {90}
    assert tmp_path / "data" / "stylized" / "dog" / "puppies" / "p1_1.jpg" in {job.output for job in manifest.jobs}


def test_precompute_fills_the_cache_for_the_pool_once_and_names_the_broken_painting(tree, capsys, tmp_path):
    m = write(tree)
    assigned = {style for job in read_manifest(m).jobs for style, _ in job.styles}
    assert main(["precompute", str(m), "--targets", "torch", "--cache-dir", str(tmp_path / "cache"), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("torn.png") == 1 and "left out of the pool" in captured.err
    assert f"{len(assigned)} distinct style target(s): {len(assigned)} computed" in captured.out
