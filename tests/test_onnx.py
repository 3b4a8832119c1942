"""Style targets through ONNX Runtime, and the content-addressed target cache."""
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from nstbatch.styles.cache import TargetCache
from nstbatch.cli import main
from nstbatch.config import resolve_params
from nstbatch.styles.onnx_backend import OnnxError, OnnxTargets, check_providers, export_targets_model, relative_error
from nstbatch.engine.targets import target_names, torch_style_targets
from nstbatch.engine.vgg import VGGFeatures
from nstbatch.engine.weights import load_weights
from tests.conftest import pattern, report_lines, spawn, wait_for

SEED_LAYERS = resolve_params("seed").style_layers


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "targets.onnx"
    error = export_targets_model(load_weights(), SEED_LAYERS, "max", path)
    return path, error


@pytest.mark.parametrize("height, width", [(64, 64), (45, 71)])
def test_onnx_runtime_and_pytorch_gram_targets_agree(exported, height, width):
    path, export_error = exported
    assert export_error < 1e-4  # the export checks itself before it lands
    session = OnnxTargets.open(path, SEED_LAYERS, "cpu")
    assert session.provider == "CPUExecutionProvider"
    image = torch.from_numpy(pattern(width, height)).permute(2, 0, 1).unsqueeze(0).float() / 255
    got = session(image).tensors()
    expected = torch_style_targets(VGGFeatures(load_weights(), SEED_LAYERS), image, SEED_LAYERS).tensors()
    assert sorted(got) == sorted(expected) == sorted(target_names(SEED_LAYERS))  # second moments and means
    for name in expected:
        assert got[name].dtype == torch.float32 and got[name].shape == expected[name].shape
        assert relative_error(got[name], expected[name]) < 1e-4, name


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_provider_without_a_gpu_is_a_clear_error(exported, tmp_path, capsys):
    with pytest.raises(OnnxError, match="needs a GPU"):
        check_providers("cuda")
    with pytest.raises(OnnxError, match="did not start CUDAExecutionProvider"):
        OnnxTargets.open(exported[0], SEED_LAYERS, "cuda")
    notices = []
    fallback = OnnxTargets.open(exported[0], SEED_LAYERS, "cuda", allow_fallback=True, notice=notices.append)
    assert fallback.provider == "CPUExecutionProvider" and "WARNING" in notices[0]
    content = tmp_path / "c.png"
    Image.fromarray(pattern(32, 32)).save(content)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"content,style,output,size,steps\n{content},{content},o.png,32,1\n")
    code = main(["run", "--in-process", str(manifest), "--providers", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a GPU" in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_unknown_provider_name():
    with pytest.raises(Exception, match="tensorrt, cuda, cpu"):
        check_providers("rocm")


def styles_folder(tmp_path, count):
    for i in range(count):
        Image.fromarray(pattern(40, 40, phase=i * 1.3), "RGB").save(tmp_path / f"s{i}.png")
    Image.fromarray(pattern(40, 32, phase=9), "RGB").save(tmp_path / "c.png")


def tiny_manifest(tmp_path, rows):
    manifest = tmp_path / "m.csv"
    manifest.write_text("content,style,output,size,steps,content_layers,style_layers\n" + "".join(
        f'c.png,{style},out/{i}.png,32,2,relu2_2,"relu1_1,relu2_1"\n' for i, style in enumerate(rows)))
    return manifest


def test_twenty_rows_over_two_styles_compute_two_targets_then_none(tmp_path, capsys):
    styles_folder(tmp_path, 2)
    manifest = tiny_manifest(tmp_path, [f"s{i % 2}.png" for i in range(20)])
    cache = tmp_path / "cache"
    assert main(["run", "--in-process", str(manifest), "--cache-dir", str(cache), "-q"]) == 0
    assert "style targets: 2 computed, 0 from the cache" in capsys.readouterr().out
    assert len(TargetCache(cache).entries()) == 2
    assert main(["run", "--in-process", str(manifest), "--cache-dir", str(cache), "-q", "--force"]) == 0
    assert "style targets: 0 computed, 2 from the cache" in capsys.readouterr().out
    lines = report_lines(tmp_path)
    assert sum(l.get("style_targets", []).count("computed") for l in lines) == 2


def test_onnx_and_torch_targets_give_the_same_output(tmp_path, capsys):
    styles_folder(tmp_path, 1)
    manifest = tiny_manifest(tmp_path, ["s0.png"])
    outputs = {}
    for backend in ("onnx", "torch"):
        assert main(["run", "--in-process", str(manifest), "--targets", backend, "--cache-dir", str(tmp_path / backend),
                     "--force", "-q"]) == 0
        outputs[backend] = torch.from_numpy(np.array(Image.open(tmp_path / "out" / "0.png"))).float()
    # Adam's first steps move every pixel by about lr whatever its gradient's size, so where a
    # gradient is ~0 the last bits of the targets decide its sign: a few pixels may differ by
    # two steps (2 * 0.05 * 255 = 26 levels); the rest agree within one 8-bit level
    difference = (outputs["onnx"] - outputs["torch"]).abs()
    assert (difference > 1).float().mean() < 0.01 and difference.max() <= 26


def test_corrupt_or_unsafe_cache_entries_are_recomputed(tmp_path, capsys):
    styles_folder(tmp_path, 1)
    manifest = tiny_manifest(tmp_path, ["s0.png"])
    cache = tmp_path / "cache"
    assert main(["precompute", str(manifest), "--cache-dir", str(cache)]) == 0
    (entry,) = TargetCache(cache).entries()
    good = entry.read_bytes()
    entry.write_bytes(good[: len(good) // 2])  # truncated
    assert main(["precompute", str(manifest), "--cache-dir", str(cache)]) == 0
    assert "1 computed, 0 already cached" in capsys.readouterr().out

    class Payload:  # a pickle that would run code if unpickled
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"layers": Payload()}, entry)
    assert main(["precompute", str(manifest), "--cache-dir", str(cache)]) == 0
    assert "1 computed" in capsys.readouterr().out and not (tmp_path / "pwned").exists()
    with open(entry, "r+b") as f:  # a flipped byte inside the tensor data
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0x55
        f.seek(0)
        f.write(data)
    cache_obj = TargetCache(cache)
    key = entry.stem
    assert cache_obj.load(key) is None and not entry.exists()  # removed, to be computed again


def test_an_old_format_cache_entry_is_never_read_as_a_target(tmp_path, monkeypatch):
    # Format 1 held second moments only. Its entries sit under other keys (the key carries the
    # format); and one that holds less than this version's targets, even under the right key
    # with a valid checksum, is computed again rather than read.
    from nstbatch.engine import targets as targets_module
    from nstbatch.styles.store import StyleTargetStore

    styles_folder(tmp_path, 1)
    params = resolve_params("fast", {"size": 40})
    store = StyleTargetStore(backend="torch", cache_dir=tmp_path / "cache")
    key = store.key(tmp_path / "s0.png", params)
    monkeypatch.setattr(targets_module, "TARGETS_FORMAT", 1)
    assert store.key(tmp_path / "s0.png", params) != key
    monkeypatch.undo()
    fresh, source = store.get(tmp_path / "s0.png", params)
    assert source == "computed" and sorted(fresh.tensors()) == sorted(target_names(params.style_layers))
    grams_only = {name: fresh.layers[name].second for name in params.style_layers}
    TargetCache(tmp_path / "cache").save(key, grams_only)
    again, source = StyleTargetStore(backend="torch", cache_dir=tmp_path / "cache").get(tmp_path / "s0.png", params)
    assert source == "computed" and sorted(again.tensors()) == sorted(fresh.tensors())


def _precompute(manifest, cache):
    return spawn("precompute", manifest, "--cache-dir", cache, "--targets", "torch", "-q")


@pytest.mark.slow
def test_precompute_killed_mid_write_leaves_no_corrupt_entry(tmp_path):
    styles_folder(tmp_path, 8)
    manifest = tmp_path / "m.csv"
    manifest.write_text("content,style,output,size\n" + "".join(
        f"c.png,s{i}.png,out/{i}.png,256\n" for i in range(8)))
    cache = tmp_path / "cache"
    for written in (1, 3, 5):  # killed once that many entries exist: inside the next one's work
        proc = _precompute(manifest, cache)
        wait_for(lambda: len(TargetCache(cache).entries()) >= written, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        entries = TargetCache(cache).entries()
        assert len(entries) >= written
        for entry in entries:
            checker = TargetCache(cache)
            assert checker.load(entry.stem) is not None, f"corrupt entry {entry}"
    # two writers of the same targets at once never corrupt them either
    first, second = _precompute(manifest, cache), _precompute(manifest, cache)
    assert first.wait() == 0 and second.wait() == 0
    entries = TargetCache(cache).entries()
    assert len(entries) == 8 and all(TargetCache(cache).load(e.stem) is not None for e in entries)


def test_auto_providers_take_what_this_machine_has(monkeypatch):
    """On a GPU machine with plain onnxruntime (no GPU providers), or with onnxruntime-gpu but
    no TensorRT libraries, ``auto`` runs what there is; a named provider is still refused."""
    import onnxruntime as ort

    from nstbatch.styles import onnx_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert onnx_backend.resolve_providers("auto") == ["CPUExecutionProvider"]
    check_providers("auto")
    with pytest.raises(OnnxError, match="no CUDAExecutionProvider"):
        check_providers("cuda")
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnx_backend, "_tensorrt_installed", lambda: False)
    assert onnx_backend.resolve_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnx_backend, "_tensorrt_installed", lambda: True)
    assert onnx_backend.resolve_providers("auto")[0] == "TensorrtExecutionProvider"
