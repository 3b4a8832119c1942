"""Training pipelines: WebDataset shards in (read in place, unsafe members refused, cut shards
kept up to the cut) and out (packed whole, each sample once, even across a kill -9), and the
metadata.jsonl that makes a stylized tree a Hugging Face imagefolder."""
import csv
import io
import json
import os
import signal
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nstbatch.io import webdataset
from nstbatch.cli import main
from nstbatch.io.manifest import read_manifest
from nstbatch.io.validate import validate
from tests.conftest import pattern, report_lines, spawn_run, wait_for, wait_until_gone

LIGHT = 'style_layers: "relu1_1,relu2_1", content_layers: relu2_2, scales: "1"'
ENTRY = f"""\
output_dir: out
defaults: {{size: 32, steps: 3, precision: fp32, {LIGHT}}}
jobs:
  - dataset: "wds/train-{{000000..000001}}.tar"
    style_pool: paintings/
    variants: 2
    output: "styl/{{shard_stem}}.tar"
    copy: [cls]
"""


def png(seed: int, size=(36, 28)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pattern(*size, phase=seed), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes, **kind) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if not kind else 0
    for key, value in kind.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if not kind else None)


def write_shard(path: Path, samples: dict[str, dict[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                add(tar, f"{key}.{ext}", data)
    return path


@pytest.fixture
def wds(tmp_path):
    """Two shards of four samples (an image and its .cls), one image corrupt; two paintings."""
    for s in range(2):
        write_shard(tmp_path / "wds" / f"train-{s:06d}.tar",
                    {f"n0{s}_{k}": {"png": png(10 * s + k) if (s, k) != (1, 2) else b"\x89PNG not really",
                                    "cls": str(k % 2).encode()} for k in range(4)})
    (tmp_path / "paintings").mkdir()
    for i in range(2):
        Image.fromarray(pattern(32, 32, phase=5 + i)[:, ::-1].copy(), "RGB").save(tmp_path / "paintings" / f"p{i}.png")
    (tmp_path / "m.yaml").write_text(ENTRY)
    return tmp_path


GOOD = [f"n0{s}_{k}" for s in range(2) for k in range(4) if (s, k) != (1, 2)]


def read_back(folder: Path) -> dict[str, dict]:
    """Every sample of the output shards, read with the real webdataset library."""
    import webdataset as wds

    urls = sorted(str(p) for p in folder.glob("*.tar"))
    found = {}
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        assert sample["__key__"] not in found, f"{sample['__key__']} twice"
        found[sample["__key__"]] = sample
    return found


# --- reading shards ---------------------------------------------------------------------------

def test_members_are_read_in_place_and_unsafe_members_are_refused_one_line_each(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "a.jpg", b"jpeg bytes")
        add(tar, "a.cls", b"3")
        add(tar, "../evil.png", b"x")
        add(tar, "/etc/evil.png", b"x")
        add(tar, "link.png", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add(tar, "hard.png", b"", type=tarfile.LNKTYPE, linkname="a.jpg")
        add(tar, "dir/b.seg.png", b"mask")
    found = webdataset.index(path)
    assert [(s.key, s.members) for s in found.samples] == [
        ("a", {"jpg": "a.jpg", "cls": "a.cls"}), ("dir/b", {"seg.png": "dir/b.seg.png"})]
    assert len(found.problems) == 4
    assert any("'../evil.png'" in p and "climbs out" in p for p in found.problems)
    assert any("'/etc/evil.png'" in p for p in found.problems)
    assert any("link.png: is a link" in p for p in found.problems)
    assert any("hard.png: is a link" in p for p in found.problems)
    assert webdataset.read(path / "a.jpg") == b"jpeg bytes"
    assert webdataset.split(path / "dir" / "b.seg.png") == (path, "dir/b.seg.png")
    assert webdataset.split(tmp_path / "plain.png") is None


def test_a_cut_shard_keeps_the_members_before_the_cut_and_names_the_cut_one(tmp_path):
    whole = write_shard(tmp_path / "whole.tar", {f"k{i}": {"png": png(i)} for i in range(3)})
    members = webdataset.index(whole).members
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:members["k1.png"].offset + 100])  # inside k1's data
    found = webdataset.index(cut)
    assert list(found.members) == ["k0.png"]
    assert len(found.problems) == 1 and "k1.png: is cut short" in found.problems[0]
    assert webdataset.read(cut / "k0.png") == png(0)


def test_an_entry_of_shards_names_members_as_jobs_and_each_broken_one_as_its_own_problem(wds):
    manifest = read_manifest(wds / "m.yaml")
    assert len(manifest.jobs) == 16  # 8 samples x 2 variants (the corrupt one is a job: its probe fails)
    job = manifest.jobs[0]
    assert job.content == wds / "wds" / "train-000000.tar" / "n00_0.png"
    assert job.output == wds / "out" / "styl" / "train-000000.tar" / "n00_0_0.png"
    assert sorted(c.target.name for c in manifest.copies if c.target.parent.name == "train-000000.tar")[:2] == \
        ["n00_0_0.cls", "n00_0_1.cls"]
    problems = validate(manifest)
    assert {p.where for p in problems} == {"m.yaml:4 (wds/train-000001.tar/n01_2.png, variant 0)",
                                           "m.yaml:4 (wds/train-000001.tar/n01_2.png, variant 1)"}
    assert all("not an image" in p.message for p in problems)


def test_brace_patterns_globs_and_lists_name_the_same_shards_and_a_missing_one_is_named(wds):
    def ids(dataset: str) -> list[str]:
        (wds / "m.yaml").write_text(ENTRY.replace('"wds/train-{000000..000001}.tar"', dataset))
        manifest = read_manifest(wds / "m.yaml")
        assert not manifest.problems, manifest.problems
        return [job.id for job in manifest.jobs]

    braces = ids('"wds/train-{000000..000001}.tar"')
    assert ids('"wds/*.tar"') == braces
    assert ids("[wds/train-000000.tar, wds/train-000001.tar]") == braces
    (wds / "m.yaml").write_text(ENTRY.replace("000001}", "000002}"))
    problems = read_manifest(wds / "m.yaml").problems
    assert len(problems) == 1 and "train-000002.tar does not exist" in problems[0].message
    # Output shards that the dataset's own glob would pick up next time are refused.
    (wds / "m.yaml").write_text(ENTRY.replace('"wds/train-{000000..000001}.tar"', '"wds/*.tar"')
                                .replace("styl/{shard_stem}.tar", "../wds/{shard_stem}-styl.tar"))
    problems = read_manifest(wds / "m.yaml").problems
    assert len(problems) == 1 and "is also named by dataset: the next run would stylize it" in problems[0].message


def test_adding_a_shard_changes_no_other_job_and_the_exported_plan_regenerates_them(wds, capsys):
    before = {job.id: (job.content, job.output, job.styles, job.params.seed) for job in read_manifest(wds / "m.yaml").jobs}
    write_shard(wds / "wds" / "train-000002.tar", {"n02_0": {"png": png(99)}})
    (wds / "m.yaml").write_text(ENTRY.replace("000001}", "000002}"))
    after = {job.id: (job.content, job.output, job.styles, job.params.seed) for job in read_manifest(wds / "m.yaml").jobs}
    assert len(after) == len(before) + 2 and all(after[i] == v for i, v in before.items())
    # The exported plan names shard + member, and reads back as the same jobs.
    assert main(["plan", str(wds / "m.yaml"), "--export", str(wds / "plan.csv")]) == 1  # the corrupt one
    assert "--skip-invalid leaves them out" in capsys.readouterr().out
    assert main(["plan", str(wds / "m.yaml"), "--export", str(wds / "plan.csv"), "--skip-invalid"]) == 0
    out, err = capsys.readouterr()
    assert "16 job(s), 2 invalid job(s) left out" in out and "left out of the plan (invalid)" in err
    rows = list(csv.DictReader(open(wds / "plan.csv")))
    assert rows[0]["content"] == "wds/train-000000.tar/n00_0.png"
    assert rows[0]["output"] == "out/styl/train-000000.tar/n00_0_0.png"
    exported = {job.id: (job.content, job.output, job.params.seed) for job in read_manifest(wds / "plan.csv").jobs}
    assert exported == {i: (c, o, seed) for i, (c, o, _, seed) in after.items() if "n01_2" not in str(c)}


# --- writing shards ---------------------------------------------------------------------------

def test_shards_out_hold_every_good_sample_once_with_its_sidecar_and_provenance(wds, capsys):
    assert main(["run", str(wds / "m.yaml"), "--in-process", "-q", "--skip-invalid"]) == 1  # the corrupt one
    err = capsys.readouterr().err
    assert "train-000001.tar/n01_2.png, 2 jobs): content: " in err  # reported by its key, once
    out = wds / "out" / "styl"
    assert sorted(p.name for p in out.iterdir()) == ["train-000000.tar", "train-000001.tar"]  # staging cleaned up
    samples = read_back(out)
    assert sorted(samples) == sorted(f"{key}_{v}" for key in GOOD for v in (0, 1))
    for key, sample in samples.items():
        assert sample["cls"] == str(int(key.split("_")[1]) % 2).encode()
        provenance = json.loads(sample["json"])
        assert provenance["content_key"] == key.rsplit("_", 1)[0]
        assert provenance["content_shard"].endswith("train-00000%s.tar" % key[2])
        assert provenance["variant"] == int(key[-1]) and provenance["style"][0].startswith(str(wds / "paintings"))
        assert Image.open(io.BytesIO(sample["png"])).size == (32, 25)
    # The report and the contact sheet show packed samples (read from the output shards).
    assert main(["report", str(wds / "m.yaml"), "-o", str(wds / "r.html")]) == 0
    assert (wds / "r.html").read_text().count("data:image/jpeg;base64") >= 3 * 14  # content, style, output
    assert main(["sheet", str(wds / "m.yaml"), "-o", str(wds / "sheet.png")]) == 0
    capsys.readouterr()
    # Done on a rerun: nothing runs, the shards are not rewritten.
    stamp = (out / "train-000000.tar").stat().st_mtime_ns
    assert main(["run", str(wds / "m.yaml"), "--in-process", "-q", "--skip-invalid", "--dry-run"]) == 0
    assert "0 to run, 14 done" in capsys.readouterr().out
    assert main(["run", str(wds / "m.yaml"), "--in-process", "-q", "--skip-invalid"]) == 1
    assert (out / "train-000000.tar").stat().st_mtime_ns == stamp


def test_a_sample_done_after_its_shard_was_packed_is_packed_in_beside_the_others(wds, capsys):
    (wds / "m.yaml").write_text(ENTRY.replace("variants: 2", "variants: 1"))
    bad = wds / "wds" / "train-000001.tar"
    assert main(["run", str(wds / "m.yaml"), "--in-process", "-q", "--skip-invalid"]) == 1
    assert sorted(read_back(wds / "out" / "styl")) == sorted(GOOD)  # one variant: no suffix
    # Mend the broken image: its job runs, and its shard is packed again with all four.
    write_shard(bad, {f"n01_{k}": {"png": png(10 + k), "cls": str(k % 2).encode()} for k in range(4)})
    capsys.readouterr()
    assert main(["run", str(wds / "m.yaml"), "--in-process", "-q"]) == 0
    samples = read_back(wds / "out" / "styl")
    assert sorted(samples) == sorted(GOOD + ["n01_2"])
    assert not list((wds / "out" / "styl").glob(".*"))


def test_array_tasks_each_pack_the_shards_whose_last_sample_they_settle(wds, capsys):
    (wds / "wds" / "train-000001.tar").unlink()  # one shard: both tasks hold some of its samples
    (wds / "m.yaml").write_text(ENTRY.replace("000001}", "000000}"))
    out = wds / "out" / "styl" / "train-000000.tar"
    assert main(["run", str(wds / "m.yaml"), "--in-process", "-q", "--shard", "0/2", "--no-steal"]) == 0
    assert not out.exists()  # task 1's samples are still pending: not packed half-full
    staged_first = sorted(p.name for p in webdataset.staging_folder(out).iterdir())
    assert 0 < len(staged_first) < 8
    assert main(["run", str(wds / "m.yaml"), "--in-process", "-q", "--shard", "1/2", "--no-steal"]) == 0
    assert "output shards packed 1" in capsys.readouterr().out
    samples = read_back(out.parent)
    assert sorted(samples) == sorted(f"n00_{k}_{v}" for k in range(4) for v in (0, 1))
    assert not webdataset.staging_folder(out).exists()


@pytest.mark.slow
def test_two_array_tasks_at_once_write_whole_shards_each_sample_once(wds):
    procs = [spawn_run(wds, "--skip-invalid", "--shard", f"{k}/2", manifest="m.yaml") for k in range(2)]
    codes = [proc.wait(timeout=600) for proc in procs]
    assert 1 in codes and set(codes) <= {0, 1}, [proc.communicate() for proc in procs]  # the corrupt sample's task
    samples = read_back(wds / "out" / "styl")
    assert sorted(samples) == sorted(f"{key}_{v}" for key in GOOD for v in (0, 1))


@pytest.mark.slow
def test_a_run_killed_midway_and_rerun_gives_whole_shards_with_each_sample_once(wds):
    (wds / "m.yaml").write_text(ENTRY.replace("steps: 3", "steps: 25"))  # time to kill it midway
    proc = spawn_run(wds, "--skip-invalid", manifest="m.yaml", start_new_session=True)
    done = wds / ".nstbatch" / "m.yaml" / "done"
    wait_for(lambda: len(list(done.glob("*.json"))) >= 9, proc, timeout=240)  # shard 0 packed, shard 1 not
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers
    proc.wait()
    wait_until_gone(proc.pid)  # no worker writes a done record after this
    assert len(list(done.glob("*.json"))) < 14  # midway
    out = wds / "out" / "styl"
    for shard in out.glob("*.tar"):  # whatever a kill leaves is a whole, valid shard
        with tarfile.open(shard) as tar:
            tar.getmembers()
    from tests.conftest import cli_process

    rerun = cli_process("run", "m.yaml", "--skip-invalid", cwd=wds, timeout=600)
    assert rerun.returncode == 1, rerun.stderr  # the corrupt sample
    samples = read_back(out)
    assert sorted(samples) == sorted(f"{key}_{v}" for key in GOOD for v in (0, 1))
    assert all(s["cls"] and json.loads(s["json"])["style"] for s in samples.values())
    assert sorted(p.name for p in out.iterdir()) == ["train-000000.tar", "train-000001.tar"]
    invalid = [line for line in report_lines(wds, manifest="m.yaml") if line["status"] == "invalid"]
    assert invalid and all("train-000001.tar/n01_2.png" in line["where"] for line in invalid)


# --- a stylized tree as a Hugging Face imagefolder -------------------------------------------

def test_a_stylized_tree_loads_as_an_imagefolder_with_label_and_style_columns(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(pattern(36, 28, phase=i + (label == "dog")), "RGB").save(tmp_path / "photos" / label / f"{i}.png")
    (tmp_path / "paintings").mkdir()
    Image.fromarray(pattern(32, 32, phase=9), "RGB").save(tmp_path / "paintings" / "p.png")
    (tmp_path / "m.yaml").write_text(f"""\
output_dir: out
defaults: {{size: 32, steps: 2, precision: fp32, {LIGHT}}}
jobs:
  - {{dataset: photos/, style_pool: paintings/, variants: 2, output: "styl/{{content_reldir}}/{{content_stem}}_{{variant}}.png"}}
""")
    assert main(["run", str(tmp_path / "m.yaml"), "--in-process", "-q"]) == 0
    lines = (tmp_path / "out" / "styl" / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 8 and json.loads(lines[0]) == {
        "file_name": "cat/0_0.png", "label": "cat", "style": "paintings/p.png", "content": "cat/0.png", "variant": 0}
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "out" / "styl"), split="train")
    assert len(loaded) == 8
    assert {"image", "label", "style", "content", "variant"} <= set(loaded.column_names)
    rows = sorted(zip(loaded["content"], loaded["variant"], loaded["label"], loaded["style"]))
    assert rows[0] == ("cat/0.png", 0, "cat", "paintings/p.png") and rows[-1][2] == "dog"
    assert np.asarray(loaded[0]["image"]).shape == (25, 32, 3)


def test_the_docs_shards_example_is_what_make_samples_draws_and_is_valid(tmp_path):
    from tests.conftest import ROOT
    from tests.test_dataset import _samples

    page = (ROOT / "docs" / "datasets.md").read_text()
    section = page[page.index("## Training pipelines"):]
    example = section[section.index("```yaml\n") + 8:section.index("```\n", section.index("```yaml"))]
    _samples().draw_shards(tmp_path)
    assert (tmp_path / "stylize.yaml").read_text() == example  # what the page shows is what it draws
    manifest = read_manifest(tmp_path / "stylize.yaml")
    assert [str(p) for p in validate(manifest)] == []
    assert len(manifest.jobs) == 4 * 3 * 2 and len(manifest.copies) == 4 * 3 * 2
    job = manifest.jobs[-1]
    assert job.output == tmp_path / "stylized" / "train-000003.tar" / "n01440763_00002_1.jpg"
    assert job.params.jpeg_quality == 90 and job.params.size == 256
