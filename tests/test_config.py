import dataclasses

import pytest

from nstbatch.config import PRESETS, StyleParams, parse_value, resolve_params
from nstbatch.errors import ParamError


def test_presets_are_named_values_of_styleparams():
    assert set(PRESETS) == {"balanced", "fast", "seed", "gatys"}
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
    ({"init": " "}, "init must be one of content\\+noise, content, noise or an image file"),
])
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(ParamError, match=message):
        resolve_params("seed", overrides)


def test_none_means_the_presets_value():
    assert resolve_params("gatys", {"steps": None}).steps == PRESETS["gatys"].steps


def test_every_field_has_help_and_kind_and_is_a_flag_and_a_column(capsys):
    from nstbatch.cli import main
    from nstbatch.manifest import CSV_COLUMNS, YAML_JOB_KEYS

    main(["stylize", "--help"])
    flags = capsys.readouterr().out
    for f in dataclasses.fields(StyleParams):
        assert f.metadata["help"] and f.metadata["kind"], f.name
        assert f"--{f.name.replace('_', '-')}" in flags and f.name in CSV_COLUMNS and f.name in YAML_JOB_KEYS
