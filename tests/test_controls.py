"""Artistic controls (issue 7): each shown by its effect, through the engine, the CLI, CSV
columns and YAML keys."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from nstbatch.engine import losses
from nstbatch.cli import main
from nstbatch.engine.targets import target_names
from nstbatch.engine.color import luminance, match_histogram, to_yiq, with_chroma
from nstbatch.config import resolve_params
from nstbatch.errors import ParamError
from nstbatch.io.manifest import read_manifest
from nstbatch.engine.vgg import build_features
from nstbatch.styles.store import StyleTargetStore
from nstbatch.io.validate import validate
from tests.conftest import pattern, pixels, stylized, targets_of, tensor


@pytest.fixture(scope="module")
def features():
    return build_features(resolve_params("fast", {"precision": "fp32"}))


@pytest.fixture
def folder(tmp_path):
    Image.fromarray(pattern(64, 48), "RGB").save(tmp_path / "content.png")
    warm = pattern(48, 48, phase=3.0)
    warm[..., 2] //= 4  # a warm style, far from the content's colours
    Image.fromarray(warm, "RGB").save(tmp_path / "warm.png")
    stripes = np.zeros((40, 40, 3), np.uint8)
    stripes[:, ::5] = (30, 200, 240)
    Image.fromarray(stripes, "RGB").save(tmp_path / "stripes.png")
    return tmp_path


def test_a_blend_of_weights_one_and_zero_gives_the_first_style_alone(folder, features):
    params = resolve_params("fast", {"precision": "fp32"})
    content, warm, stripes = (tensor(pixels(folder / n)) for n in ("content.png", "warm.png", "stripes.png"))
    alone = targets_of(features, content, warm, params).style
    blended = targets_of(features, content, [(warm, 1.0), (stripes, 0.0)], params).style
    other = targets_of(features, content, [(warm, 0.5), (stripes, 0.5)], params).style
    for name in params.style_layers:
        torch.testing.assert_close(blended.layers[name].second, alone.layers[name].second)
        torch.testing.assert_close(blended.layers[name].mean, alone.layers[name].mean)
        assert not torch.allclose(other.layers[name].second, alone.layers[name].second)


def test_blends_from_the_cli_csv_and_yaml_agree(folder, capsys):
    # fp32: in bf16, stylize's inline targets (network in channels-last) and run's precomputed
    # ones differ in the last bits, which Adam's normalised steps can amplify (RESULTS.md).
    args = ["--size", "64", "--steps", "3", "--precision", "fp32", "-q"]
    assert main(["stylize", str(folder / "content.png"), str(folder / "warm.png"), str(folder / "stripes.png"),
                 "--style-weights", "0.7,0.3", "-o", str(folder / "cli.png")] + args) == 0
    (folder / "m.csv").write_text("content,style,style_weights,output,size,steps,precision\n"
                                  "content.png,warm.png|stripes.png,0.7|0.3,csv.png,64,3,fp32\n")
    (folder / "m.yaml").write_text("defaults: {size: 64, steps: 3, precision: fp32}\njobs:\n"
                                   "  - {content: content.png, output: yaml.png,\n"
                                   "     style: {warm.png: 0.7, stripes.png: 0.3}}\n")
    assert main(["run", "--in-process", str(folder / "m.csv"), "-q", "--targets", "torch"]) == 0
    assert main(["run", "--in-process", str(folder / "m.yaml"), "-q", "--targets", "torch"]) == 0
    capsys.readouterr()
    cli = tensor(pixels(folder / "cli.png"))
    for name in ("csv.png", "yaml.png"):
        assert (tensor(pixels(folder / name)) - cli).abs().max() <= 1 / 255


def test_luminance_keeps_the_contents_chroma_within_2_levels(folder, capsys):
    out = folder / "lum.png"
    assert main(["stylize", str(folder / "content.png"), str(folder / "warm.png"), "-o", str(out),
                 "--size", "64", "--steps", "15", "--preserve-color", "luminance", "-q"]) == 0
    capsys.readouterr()
    got, content = to_yiq(tensor(pixels(out))), to_yiq(tensor(pixels(folder / "content.png")))
    assert (got[:, 1:] - content[:, 1:]).abs().max() <= 2 / 255
    plain = folder / "plain.png"
    assert main(["stylize", str(folder / "content.png"), str(folder / "warm.png"), "-o", str(plain),
                 "--size", "64", "--steps", "15", "-q"]) == 0
    assert (to_yiq(tensor(pixels(plain)))[:, 1:] - content[:, 1:]).abs().max() > 10 / 255  # without it, no
    assert (got[:, 0] - content[:, 0]).abs().mean() > 1 / 255  # and the luminance was stylized


def test_chroma_is_kept_even_where_the_new_luminance_would_leave_the_gamut():
    content = tensor(pattern(32, 32))
    bright = torch.ones_like(content)  # luminance 1 everywhere: impossible with most chromas
    out = with_chroma(bright, content)
    assert out.min() >= 0 and out.max() <= 1
    assert (to_yiq(out)[:, 1:] - to_yiq(content)[:, 1:]).abs().max() < 1e-5
    gray = luminance(content)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])


def test_histogram_matching_gives_the_style_the_contents_colour_means(folder):
    content, warm = tensor(pixels(folder / "content.png")), tensor(pixels(folder / "warm.png"))
    recoloured = match_histogram(warm, content)
    means = lambda image: image.mean(dim=(0, 2, 3))  # noqa: E731
    assert (means(warm) - means(content)).abs().max() > 20 / 255
    assert (means(recoloured) - means(content)).abs().max() <= 2 / 255
    assert recoloured.min() >= 0 and recoloured.max() <= 1


def test_histogram_targets_depend_on_the_content_and_are_cached_per_pair(folder, tmp_path):
    store = StyleTargetStore(backend="torch", cache_dir=tmp_path / "cache")
    params = resolve_params("fast", {"size": 40, "preserve_color": "histogram"})
    Image.fromarray(pattern(64, 48, phase=1.5)[::-1].copy(), "RGB").save(folder / "other.png")
    a, _ = store.get(folder / "warm.png", params, folder / "content.png")
    b, _ = store.get(folder / "warm.png", params, folder / "other.png")
    plain, _ = store.get(folder / "warm.png", resolve_params("fast", {"size": 40}))
    assert not torch.allclose(a.layers["relu1_1"].second, b.layers["relu1_1"].second)
    assert not torch.allclose(a.layers["relu1_1"].second, plain.layers["relu1_1"].second)
    again, source = StyleTargetStore(backend="torch", cache_dir=tmp_path / "cache").get(
        folder / "warm.png", params, folder / "content.png")
    assert source == "cache" and torch.equal(again.layers["relu1_1"].second, a.layers["relu1_1"].second)


def test_style_scale_changes_the_targets_and_the_same_scale_gives_the_same(folder, tmp_path):
    def targets(**overrides):
        store = StyleTargetStore(backend="torch", cache_dir=tmp_path / "c")
        return store.get(folder / "warm.png", resolve_params("fast", {"size": 48, **overrides}))

    one, _ = targets(style_scale=1.0)
    two, source = targets(style_scale=2.0)
    assert source == "computed"
    again, source = targets(style_scale=2.0)
    assert source == "cache"
    sized, source = targets(style_size=96)  # the same long side, given in pixels
    assert source == "cache"
    one, two, again, sized = (target.tensors() for target in (one, two, again, sized))
    for name in one:
        if name in target_names(()):  # the pixels' colour moments hardly change with the size
            continue
        assert not torch.allclose(one[name], two[name], rtol=1e-3)
        torch.testing.assert_close(again[name], two[name], rtol=0, atol=0)
        torch.testing.assert_close(sized[name], two[name], rtol=0, atol=0)
    with pytest.raises(ParamError, match="style_scale"):
        resolve_params("fast", {"style_scale": "0"})


def test_a_style_too_small_at_its_style_size_is_found_before_running(folder):
    (folder / "m.csv").write_text("content,style,output,style_size\ncontent.png,warm.png,o.png,8\n")
    problems = validate(read_manifest(folder / "m.csv"))
    assert any("style warm.png is 8x8 px at size 8" in str(p) for p in problems), problems


def test_total_variation_weight_lowers_the_outputs_total_variation(folder, features):
    content, style = tensor(pixels(folder / "content.png")), tensor(pixels(folder / "warm.png"))
    tv = {}
    for weight in (0.0, 1e4):
        params = resolve_params("balanced", {"steps": 20, "precision": "fp32", "tv_weight": weight})
        tv[weight] = float(losses.tv_cost(stylized(content, style, params, features=features).image))
    assert tv[1e4] < 0.8 * tv[0.0]


@pytest.mark.parametrize("fmt", ["csv", "yaml"])
def test_init_from_an_image_file_named_in_a_manifest(folder, capsys, fmt):
    Image.fromarray(pattern(32, 24, phase=5.0), "RGB").save(folder / "start.png")
    if fmt == "csv":
        (folder / "m.csv").write_text("content,style,output,size,steps,init,scales\n"
                                      "content.png,warm.png,out/a.png,64,0,start.png,1\n")
    else:
        (folder / "m.yaml").write_text("defaults: {size: 64, steps: 0, init: start.png, scales: [1]}\n"
                                       "jobs:\n  - {content: content.png, style: warm.png, output: out/a.png}\n")
    assert main(["run", "--in-process", str(folder / f"m.{fmt}"), "-q", "--targets", "torch"]) == 0
    capsys.readouterr()
    with Image.open(folder / "start.png") as im:
        expected = tensor(np.asarray(im.resize((64, 48), Image.Resampling.LANCZOS)))
    assert (tensor(pixels(folder / "out" / "a.png")) - expected).abs().max() <= 1 / 255


def test_a_missing_init_file_is_a_manifest_problem(folder):
    (folder / "m.csv").write_text("content,style,output,init\ncontent.png,warm.png,o.png,nothere.png\n")
    problems = validate(read_manifest(folder / "m.csv"))
    assert any("init:" in str(p) and "nothere.png" in str(p) for p in problems), problems


def test_save_every_leaves_snapshots_in_the_state_dir_and_a_cost_history(folder, capsys):
    (folder / "m.yaml").write_text(
        "defaults: {size: 64, steps: 12, save_every: 4, style_scale: 0.75}\n"
        "jobs:\n  - {id: one, content: content.png, style: warm.png, output: out/one.png}\n")
    assert main(["run", "--in-process", str(folder / "m.yaml"), "-q", "--targets", "torch"]) == 0
    capsys.readouterr()
    state = folder / ".nstbatch" / "m.yaml"
    snaps = sorted(p.name for p in (state / "snapshots" / "one").iterdir())
    assert snaps == ["step-000004.png", "step-000008.png"]  # the last step is the output itself
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["one.png"]
    with open(state / "history" / "one.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(13))
    assert float(rows[-1]["total"]) < float(rows[0]["total"])
    done = json.loads((state / "done" / "one.json").read_text())
    assert done["id"] == "one"


def test_snapshots_go_where_asked(folder, capsys):
    (folder / "m.csv").write_text("id,content,style,output,size,steps,save_every\n"
                                  "a,content.png,warm.png,o.png,64,6,3\n")
    assert main(["run", "--in-process", str(folder / "m.csv"), "-q", "--targets", "torch",
                 "--snapshot-dir", str(folder / "snaps")]) == 0
    capsys.readouterr()
    assert [p.name for p in (folder / "snaps" / "snapshots" / "a").iterdir()] == ["step-000003.png"]


def test_stylize_keeps_snapshots_beside_not_among_outputs_and_writes_its_history(folder, capsys):
    out = folder / "made" / "one.png"
    assert main(["stylize", str(folder / "content.png"), str(folder / "warm.png"), "-o", str(out),
                 "--size", "64", "--steps", "10", "--save-every", "5", "--history", str(folder / "h.json"),
                 "-q"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (folder / "made").iterdir()) == [".nstbatch", "one.png"]
    assert [p.name for p in (folder / "made" / ".nstbatch" / "snapshots" / "one").iterdir()] == ["step-000005.png"]
    history = json.loads((folder / "h.json").read_text())
    assert [h["step"] for h in history] == list(range(11))
    assert main(["stylize", str(folder / "content.png"), str(folder / "warm.png"), "-o", str(out),
                 "--history", str(folder / "h.txt")]) == 2
    assert "give a .csv or .json file" in capsys.readouterr().err


def test_precompute_fills_the_cache_for_every_colour_mode_and_style_size_so_run_computes_none(folder, capsys):
    Image.fromarray(pattern(64, 48, phase=2.5), "RGB").save(folder / "content2.png")
    (folder / "m.yaml").write_text(
        "defaults: {size: 64, steps: 2}\njobs:\n"
        "  - {content: content.png, style: warm.png, output: o/plain.png}\n"
        "  - {content: content.png, style: warm.png, output: o/lum.png, preserve_color: luminance}\n"
        "  - {content: content2.png, style: warm.png, output: o/lum2.png, preserve_color: luminance}\n"
        "  - {content: content.png, style: warm.png, output: o/hist.png, preserve_color: histogram}\n"
        "  - {content: content2.png, style: warm.png, output: o/hist2.png, preserve_color: histogram}\n"
        "  - {content: content.png, style: warm.png, output: o/big.png, style_scale: 1.5}\n")
    cache = folder / "cache"
    assert main(["precompute", str(folder / "m.yaml"), "--cache-dir", str(cache), "--targets", "torch"]) == 0
    # plain, luminance (shared by both contents), histogram per content, the larger style
    assert "5 distinct style target(s): 5 computed" in capsys.readouterr().out
    assert main(["run", "--in-process", str(folder / "m.yaml"), "--cache-dir", str(cache), "--targets", "torch", "-q"]) == 0
    assert "style targets: 0 computed" in capsys.readouterr().out
