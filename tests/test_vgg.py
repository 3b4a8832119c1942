import json
from pathlib import Path

import pytest
import torch

from nstbatch.errors import UsageError
from nstbatch.layers import LAYER_NAMES, min_image_side
from nstbatch.engine.vgg import VGGFeatures, vgg19_layers
from nstbatch.engine.weights import load_weights

GOLDEN = Path(__file__).parent / "golden"


def test_layer_names_cover_vgg19():
    assert len(LAYER_NAMES) == 37
    assert LAYER_NAMES[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert LAYER_NAMES[-3:] == ("conv5_4", "relu5_4", "pool5")


def test_extractor_is_truncated_after_its_deepest_layer_and_stops_at_the_requested_one():
    features = VGGFeatures(load_weights(), ["relu1_1", "relu3_1"])
    assert len(features.features) == LAYER_NAMES.index("relu3_1") + 1
    calls = []
    for i, module in enumerate(features.features):
        module.register_forward_hook(lambda m, inp, out, i=i: calls.append(i))
    out = features(torch.rand(1, 3, 16, 16), ["relu1_1"])
    assert list(out) == ["relu1_1"] and calls == [0, 1]


def test_activations_are_not_overwritten_by_in_place_relus():
    features = VGGFeatures(load_weights(), ["conv1_1", "relu1_1"])
    out = features(torch.rand(1, 3, 16, 16), ["conv1_1", "relu1_1"])
    assert (out["conv1_1"] < 0).any() and not (out["relu1_1"] < 0).any()


def test_average_pooling_is_used_when_asked():
    x = torch.rand(1, 3, 16, 16)
    pooled = {p: VGGFeatures(load_weights(), ["pool1"], p)(x, ["pool1"])["pool1"] for p in ("max", "avg")}
    relu = VGGFeatures(load_weights(), ["relu1_2"])(x, ["relu1_2"])["relu1_2"]
    torch.testing.assert_close(pooled["avg"], torch.nn.functional.avg_pool2d(relu, 2))
    torch.testing.assert_close(pooled["max"], torch.nn.functional.max_pool2d(relu, 2))


def test_unknown_layer_names_fail_with_the_nearest_valid_ones():
    with pytest.raises(UsageError, match="did you mean relu4_2"):
        VGGFeatures(load_weights(), ["relu4_22"])
    with pytest.raises(UsageError, match="conv3_1"):
        VGGFeatures(load_weights(), ["conv3-1"])


def test_too_small_image_fails_before_the_first_forward_pass():
    features = VGGFeatures(load_weights(), ["relu5_1"])
    calls = []
    features.features[0].register_forward_hook(lambda *a: calls.append(1))
    assert min_image_side(["relu5_1"]) == 16
    with pytest.raises(UsageError, match="at least 16 px"):
        features(torch.rand(1, 3, 15, 40), ["relu5_1"])
    assert calls == []
    features(torch.rand(1, 3, 16, 16), ["relu5_1"])  # exactly the minimum works


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_real_weights_fingerprint(pooling):
    """Guards decoding and preprocessing; regenerate with tests/golden/make_fingerprint.py."""
    import sys
    sys.path.insert(0, str(GOLDEN))
    from make_fingerprint import fingerprint

    golden = json.loads((GOLDEN / "vgg_fingerprint.json").read_text())
    assert golden["weights"] == load_weights().id
    got = fingerprint(pooling)
    for name, expected in golden["layers"][pooling].items():
        assert got[name]["shape"] == expected["shape"], name
        for stat in ("l2", "mean", "max"):
            assert got[name][stat] == pytest.approx(expected[stat], rel=1e-4, abs=1e-4), (name, stat)


def test_the_network_is_torchvisions_vgg19_features_module_for_module():
    # Built here to spare every process the torchvision.models import; the same modules,
    # indices and state-dict keys, so torchvision's own weights load unchanged.
    from torchvision.models.vgg import cfgs, make_layers

    ours, theirs = vgg19_layers(), make_layers(cfgs["E"])
    assert [repr(m).replace("inplace=True", "") for m in theirs] == [repr(m) for m in ours]
    assert {k: v.shape for k, v in theirs.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert not any(getattr(m, "inplace", False) for m in ours)


@pytest.mark.slow
def test_no_process_of_a_run_imports_torchvision():
    import subprocess
    import sys

    code = ("import sys; from nstbatch.engine.vgg import build_features; from nstbatch.config import resolve_params;"
            " from nstbatch.styles import onnx_backend; from nstbatch.jobs import executor, run; build_features(resolve_params());"
            " print('torchvision' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
