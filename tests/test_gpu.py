"""The CUDA code paths: run where torch sees a GPU (a lent one, `benchmarks/gpu.sh` runs them),
skipped elsewhere. Each one compares the GPU against the CPU or against itself."""

import numpy as np
import pytest
import torch
from PIL import Image

from nstbatch.cli import main
from nstbatch.config import resolve_params
from nstbatch.engine.optimize import Memory, Stylization
from nstbatch.engine.vgg import build_features
from tests.conftest import pattern, report_lines, style_target, stylized, tensor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def assert_nearly_equal(a, b):
    """Two runs whose kernels round differently: Adam's normalised steps turn the last bits
    into whole pixel levels at a few pixels whose gradient is near zero (0.1 at worst seen on
    an H200, mean 1e-4), so the test is on the bulk, not the worst pixel."""
    difference = (a.cpu() - b.cpu()).abs()
    assert difference.mean() < 1e-3, difference.mean()
    assert (difference > 2 / 255).float().mean() < 0.005, (difference > 2 / 255).float().mean()


@pytest.fixture(scope="module")
def pair():
    content = tensor(pattern(96, 80))
    style = tensor(pattern(80, 80, phase=2.0)[:, ::-1].copy())
    return content, style


@pytest.fixture(scope="module")
def gpu_features():
    return build_features(resolve_params("balanced"), "cuda")


@pytest.fixture
def exact_fp32():
    """No TF32: its rounding depends on the kernels cuDNN picks, which depend on the batch."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_gpu_fp32_run_matches_the_cpu_run(pair, gpu_features, exact_fp32):
    content, style = pair
    params = resolve_params("balanced", {"steps": 10, "precision": "fp32"})
    gpu = stylized(content.cuda(), style.cuda(), params, features=gpu_features).image.cpu()
    cpu = stylized(content, style, params).image
    assert_nearly_equal(gpu, cpu)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_on_the_gpu_reaches_the_fp32_cost(pair, gpu_features, precision):
    content, style = pair
    runs = {}
    for p in ("fp32", precision):
        params = resolve_params("balanced", {"steps": 30, "precision": p, "scales": "1", "scale_steps": "1"})
        runs[p] = stylized(content.cuda(), style.cuda(), params, features=gpu_features, report_every=10)
    reduced, full = runs[precision].history, runs["fp32"].history
    assert all(np.isfinite(p.total) for p in reduced)
    assert reduced[-1].total < 0.5 * reduced[0].total
    # Adam's normalised steps let pixels drift apart (0.04 mean on the CPU's bf16 too), but the
    # costs reached must agree
    assert abs(reduced[-1].total - full[-1].total) < 0.1 * full[-1].total, (reduced[-1], full[-1])


def test_batch_on_the_gpu_matches_one_by_one(pair, gpu_features, exact_fp32):
    content, style = pair
    params = resolve_params("balanced", {"steps": 6, "precision": "fp32", "init": "content"})
    batch = torch.cat([content, content.flip(-1), content.flip(-2)]).cuda()
    together = stylized(batch, style.cuda(), params, features=gpu_features).image
    alone = stylized(content.flip(-2).cuda(), style.cuda(), params, features=gpu_features).image
    assert_nearly_equal(together[2:], alone)


def test_compiled_network_gives_the_eager_run(pair, exact_fp32):
    content, style = pair
    params = resolve_params("balanced", {"steps": 5, "precision": "fp32"})
    eager = stylized(content.cuda(), style.cuda(), params, features=build_features(params, "cuda")).image
    features = build_features(params, "cuda").compile_trunk()
    compiled = stylized(content.cuda(), style.cuda(), params, features=features).image
    assert_nearly_equal(compiled, eager)


def test_activation_checkpointing_on_the_gpu_gives_the_same_run(pair, gpu_features):
    content, style = pair
    params = resolve_params("balanced", {"steps": 4, "precision": "bf16"})
    plain = stylized(content.cuda(), style.cuda(), params, features=gpu_features, memory=Memory(False))
    checked = stylized(content.cuda(), style.cuda(), params, features=gpu_features, memory=Memory(True))
    assert (plain.image - checked.image).abs().max() < 1e-3


def test_onnx_targets_on_cuda_with_io_binding_agree_with_torch(tmp_path):
    import onnxruntime as ort

    from nstbatch.styles.onnx_backend import OnnxTargets, export_targets_model, relative_error
    from nstbatch.engine.targets import torch_style_targets
    from nstbatch.engine.vgg import VGGFeatures
    from nstbatch.engine.weights import load_weights

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    layers = resolve_params("seed").style_layers
    model = tmp_path / "t.onnx"
    export_targets_model(load_weights(), layers, "max", model)
    session = OnnxTargets.open(model, layers, "cuda", cache_root=tmp_path, device="cuda:0")
    assert session.provider == "CUDAExecutionProvider"
    image = tensor(pattern(72, 56)).cuda()
    got = session(image).tensors()
    expected = torch_style_targets(VGGFeatures(load_weights(), layers).cuda(), image, layers).tensors()
    for name in layers:
        assert got[name].device.type == "cuda"
        assert relative_error(got[name].float(), expected[name].float()) < 1e-3


def test_run_on_the_gpu_with_batch_auto_and_compile(tmp_path, capsys):
    for i in range(3):
        Image.fromarray(pattern(64, 48, phase=i), "RGB").save(tmp_path / f"c{i}.png")
    Image.fromarray(pattern(48, 48, phase=5)[:, ::-1].copy(), "RGB").save(tmp_path / "s.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,content,style,output,size,steps\n" + "".join(
        f"j{i},c{i}.png,s.png,out/j{i}.png,64,20\n" for i in range(3)))
    assert main(["run", "--in-process", str(manifest), "--devices", "cuda", "--batch", "auto", "--compile", "-q"]) == 0
    capsys.readouterr()
    for i in range(3):
        with Image.open(tmp_path / "out" / f"j{i}.png") as im:
            assert im.size == (64, 48)
    lines = report_lines(tmp_path)
    assert sorted(l["id"] for l in lines if l["status"] == "done") == ["j0", "j1", "j2"]
    assert {l["device"] for l in lines if l["status"] != "started"} == {"cuda:0"}


@pytest.mark.parametrize("mode", ["luminance", "histogram"])
def test_colour_preservation_on_the_gpu_matches_the_cpu(pair, gpu_features, mode, exact_fp32):
    from nstbatch.engine.color import to_yiq

    content, style = pair
    params = resolve_params("balanced", {"steps": 8, "precision": "fp32", "preserve_color": mode, "save_every": 4})
    snapshots = []
    with Stylization(content.cuda(), style_target(style.cuda(), params, content.cuda()), params, features=gpu_features) as run:
        for point in run:
            if point.passed(params.save_every):
                snapshots.append((point.step, run.image().device.type))
    gpu = run.result().image.cpu()
    cpu = stylized(content, style, params).image
    assert_nearly_equal(gpu, cpu)
    assert snapshots == [(4, "cuda")]
    if mode == "luminance":
        assert (to_yiq(gpu)[:, 1:] - to_yiq(content)[:, 1:]).abs().max() < 1e-4
