"""The costs against float64 NumPy implementations of the formulas, written out longhand."""
import numpy as np
import pytest
import torch

from nstbatch.engine import losses
from nstbatch.engine.targets import Moments, StyleTarget, blend_targets


def np_gram(a):  # a: (C, H, W)
    c = a.shape[0]
    unrolled = a.reshape(c, -1).astype(np.float64)
    return unrolled @ unrolled.T


def layer_style_cost(a_S, a_G, normalization="seed"):
    """One layer's style cost from the activations of the style and generated images."""
    _, _, n_H, n_W = a_G.shape
    if normalization == "balanced":
        return losses.balanced_gram_cost(losses.gram_matrix(a_S), losses.gram_matrix(a_G))
    return losses.gram_style_cost(losses.gram_matrix(a_S), losses.gram_matrix(a_G), n_H, n_W)


def np_layer_style_cost(a_S, a_G):
    c, h, w = a_G.shape
    return ((np_gram(a_S) - np_gram(a_G)) ** 2).sum() / (2.0 * h * w * c) ** 2


def np_content_cost(a_C, a_G):
    c, h, w = a_G.shape
    return ((a_C.astype(np.float64) - a_G) ** 2).sum() / (4.0 * h * w * c)


def rel_err(x, ref):
    return np.max(np.abs(np.asarray(x, np.float64) - ref) / np.maximum(np.abs(ref), 1e-30))


@pytest.fixture
def acts():
    rng = np.random.default_rng(1)
    # a batch of 3 images' activations, non-negative as after a ReLU
    return (np.maximum(rng.normal(size=(3, 8, 5, 7)), 0).astype(np.float32),
            np.maximum(rng.normal(size=(3, 8, 5, 7)), 0).astype(np.float32))


def test_gram_matches_numpy_for_each_image_of_a_batch(acts):
    a, _ = acts
    gram = losses.gram_matrix(torch.from_numpy(a))
    assert gram.shape == (3, 8, 8) and gram.dtype == torch.float32
    for i in range(3):
        assert rel_err(gram[i].numpy(), np_gram(a[i])) < 1e-5


def test_layer_style_cost_matches_numpy(acts):
    a_S, a_G = acts
    cost = layer_style_cost(torch.from_numpy(a_S), torch.from_numpy(a_G))
    assert cost.shape == (3,)
    assert rel_err(cost.numpy(), [np_layer_style_cost(a_S[i], a_G[i]) for i in range(3)]) < 1e-5


def test_style_target_of_batch_one_broadcasts_over_the_batch(acts):
    a_S, a_G = acts
    gram_S = losses.gram_matrix(torch.from_numpy(a_S[:1]))  # (1, C, C)
    cost = losses.style_cost({"relu1_1": gram_S}, {"relu1_1": torch.from_numpy(a_G)}, {"relu1_1": 0.7})
    ref = [0.7 * np_layer_style_cost(a_S[0], a_G[i]) for i in range(3)]
    assert rel_err(cost.numpy(), ref) < 1e-5


def test_style_cost_is_the_weighted_sum_over_layers(acts):
    a_S, a_G = acts
    b_S, b_G = a_S[:, :4, :3, :3] * 2, a_G[:, :4, :3, :3]
    grams = {"l1": losses.gram_matrix(torch.from_numpy(a_S)),
             "l2": losses.gram_matrix(torch.from_numpy(np.ascontiguousarray(b_S)))}
    act_G = {"l1": torch.from_numpy(a_G), "l2": torch.from_numpy(np.ascontiguousarray(b_G))}
    cost = losses.style_cost(grams, act_G, {"l1": 0.25, "l2": 2.0})
    ref = [0.25 * np_layer_style_cost(a_S[i], a_G[i]) + 2.0 * np_layer_style_cost(b_S[i], b_G[i])
           for i in range(3)]
    assert rel_err(cost.numpy(), ref) < 1e-5


def test_content_cost_matches_numpy_and_is_positive_for_different_activations(acts):
    a_C, a_G = acts
    cost = losses.content_cost(torch.from_numpy(a_C), torch.from_numpy(a_G))
    assert cost.shape == (3,)
    assert rel_err(cost.numpy(), [np_content_cost(a_C[i], a_G[i]) for i in range(3)]) < 1e-5
    assert (cost > 0).all()  # the seed's listing subtracted a_G from itself and got 0 here


def test_content_cost_half_sum_is_the_papers():
    a_C, a_G = torch.ones(1, 2, 3, 3), torch.zeros(1, 2, 3, 3)
    assert losses.content_cost(a_C, a_G, "half_sum").item() == pytest.approx(9.0)
    with pytest.raises(ValueError, match="seed, half_sum, balanced"):
        losses.content_cost(a_C, a_G, "mean")


def test_balanced_costs_are_relative_errors_against_numpy(acts):
    a_S, a_G = acts
    cost = layer_style_cost(torch.from_numpy(a_S), torch.from_numpy(a_G), "balanced")
    ref = [((np_gram(a_S[i]) - np_gram(a_G[i])) ** 2).sum() / (np_gram(a_S[i]) ** 2).sum() for i in range(3)]
    assert rel_err(cost.numpy(), ref) < 1e-5
    content = losses.content_cost(torch.from_numpy(a_S), torch.from_numpy(a_G), "balanced")
    ref = [((a_S[i].astype(np.float64) - a_G[i]) ** 2).sum() / (a_S[i].astype(np.float64) ** 2).sum()
           for i in range(3)]
    assert rel_err(content.numpy(), ref) < 1e-5
    # an image of zeros is exactly one unit away on both terms
    zeros = torch.zeros_like(torch.from_numpy(a_G))
    assert layer_style_cost(torch.from_numpy(a_S), zeros, "balanced").tolist() == pytest.approx([1.0] * 3)
    assert losses.content_cost(torch.from_numpy(a_S), zeros, "balanced").tolist() == pytest.approx([1.0] * 3)


def test_balanced_style_cost_does_not_depend_on_the_scale_of_the_features(acts):
    # Per-position Grams, feature_scale, or a layer's typical magnitude: none changes it.
    a_S, a_G = (torch.from_numpy(a) for a in acts)
    grams = {"l": losses.gram_matrix(a_S) / 35}
    base = losses.style_cost(grams, {"l": a_G}, {"l": 1.0}, "balanced")
    scaled = losses.style_cost({"l": grams["l"] * 1e-6}, {"l": a_G * 1e-3}, {"l": 1.0}, "balanced")
    assert torch.allclose(base, scaled, rtol=1e-4)
    seed = losses.style_cost(grams, {"l": a_G}, {"l": 1.0})
    assert not torch.allclose(base, seed)
    with pytest.raises(ValueError, match="seed, balanced"):
        losses.style_cost(grams, {"l": a_G}, {"l": 1.0}, "per_layer")


def test_total_cost_is_alpha_content_plus_beta_style():
    jc, js = torch.tensor([2.0, 3.0]), torch.tensor([5.0, 7.0])
    assert losses.total_cost(jc, js, 10, 40).tolist() == [220.0, 310.0]
    assert losses.total_cost(jc, js, 10, 40, torch.tensor([1.0, 1.0]), 0.5).tolist() == [220.5, 310.5]


def test_tv_of_a_checkerboard_is_exactly_two_and_of_a_constant_zero():
    board = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    image = board.float().expand(2, 3, 8, 8)
    assert losses.tv_cost(image).tolist() == [2.0, 2.0]
    assert losses.tv_cost(torch.full((1, 3, 5, 5), 0.3)).tolist() == [0.0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gram_is_float32_whatever_the_activation_precision(dtype):
    # 300 x 300 activations of 60 sum to 3.2e8 per entry: beyond fp16's range.
    a = torch.full((1, 2, 300, 300), 60.0, dtype=dtype)
    gram = losses.gram_matrix(a)
    assert gram.dtype == torch.float32
    assert torch.isfinite(gram).all() and gram[0, 0, 0].item() == pytest.approx(60.0 ** 2 * 90000)


def test_total_cost_gradcheck_with_respect_to_the_image():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    target_a = torch.relu(conv(torch.rand(1, 3, 5, 6, dtype=torch.float64))).detach()
    target_gram = losses.gram_matrix(torch.relu(conv(torch.rand(1, 3, 4, 4, dtype=torch.float64)))).detach()

    def cost(image):
        a = torch.relu(conv(image)) + 0.1  # offset keeps away from ReLU's kink
        jc = losses.content_cost(target_a, a)
        js = losses.style_cost({"l": target_gram}, {"l": a}, {"l": 1.0})
        balanced = (losses.content_cost(target_a, a, "balanced")
                    + losses.style_cost({"l": target_gram}, {"l": a}, {"l": 1.0}, "balanced"))
        return losses.total_cost(jc, js, 10.0, 40.0, losses.tv_cost(image), 0.5) + balanced

    assert torch.autograd.gradcheck(cost, (x,), eps=1e-6, atol=1e-5)


# --- the Wasserstein-2 style cost ---------------------------------------------------------------

def _np_sqrtm(a: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(a)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _random_spd(rng, c: int, rank: int | None = None) -> np.ndarray:
    f = rng.standard_normal((c, rank or 2 * c))
    return f @ f.T / f.shape[1]


def test_w2_of_gaussians_with_diagonal_covariances_is_the_closed_form():
    # Commuting covariances: W2² = ‖Δμ‖² + Σ(√a − √b)², per channel: divided by C.
    a, b = torch.tensor([[1.0, 4.0, 9.0]], dtype=torch.float64), torch.tensor([[4.0, 1.0, 0.25]], dtype=torch.float64)
    mean_G, mean_S = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64), torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    cost = losses.w2_style_cost(mean_G, torch.diag_embed(a), mean_S, torch.diag_embed(b))
    expected = (((mean_G - mean_S) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()) / 3
    assert float(cost) == pytest.approx(float(expected), rel=1e-10)


def test_sqrtm_and_the_gradient_of_its_trace_match_float64_references():
    rng = np.random.default_rng(3)
    for rank in (None, 3):  # full rank, and rank-deficient (fewer positions than channels)
        a = _random_spd(rng, 12, rank)
        scale = np.abs(_np_sqrtm(a)).max()
        exact = losses.sqrtm_psd(torch.from_numpy(a)).numpy()
        assert np.abs(exact - _np_sqrtm(a)).max() < 1e-6 * scale
        # float32: a zero eigenvalue comes back as ~1e-7 of the largest, and its root as ~3e-4
        single = losses.sqrtm_psd(torch.from_numpy(a).float()).double().numpy()
        assert np.abs(single - _np_sqrtm(a)).max() < 2e-3 * scale
        x = torch.from_numpy(a + 0.05 * np.eye(12)).double().requires_grad_(True)
        losses.trace_sqrtm_psd(x).backward()
        expected = 0.5 * np.linalg.inv(_np_sqrtm(a + 0.05 * np.eye(12)))  # d tr(A^½)/dA = ½ A^-½
        assert np.abs(x.grad.numpy() - expected).max() < 1e-8 * np.abs(expected).max()
        single = torch.from_numpy(a + 0.05 * np.eye(12)).float().requires_grad_(True)
        losses.trace_sqrtm_psd(single).backward()
        assert np.abs(single.grad.double().numpy() - expected).max() < 1e-3 * np.abs(expected).max()


def test_w2_is_zero_for_identical_statistics_positive_otherwise_and_its_gradient_is_finite():
    torch.manual_seed(0)
    style = torch.rand(2, 8, 5, 6)  # 30 positions for 8 channels
    small = torch.rand(2, 8, 2, 2, requires_grad=True)  # 4 positions: a rank-deficient covariance
    mean_S, second_S = losses.feature_moments(style)
    cov_S = losses.covariance(mean_S, second_S, 1e-4)
    same = losses.w2_style_cost(mean_S, cov_S, mean_S, cov_S)
    assert same.abs().max() < 1e-5 and (same >= 0).all()
    mean_G, second_G = losses.feature_moments(small)
    cost = losses.w2_style_cost(mean_G, losses.covariance(mean_G, second_G, 1e-4), mean_S, cov_S)
    assert (cost > 0.01).all()
    cost.sum().backward()
    assert torch.isfinite(small.grad).all() and small.grad.abs().max() > 0


def test_blended_targets_are_the_moments_of_the_pooled_features_at_feature_scale():
    torch.manual_seed(1)
    a, b = torch.rand(1, 6, 4, 5), torch.rand(1, 6, 4, 5) * 2

    def target(x, pixels):
        return StyleTarget({"relu1_1": Moments(*losses.feature_moments(x))}, Moments(*losses.feature_moments(pixels)))

    colours = torch.rand(1, 3, 4, 5), torch.rand(1, 3, 4, 5)
    blended = blend_targets([(target(a, colours[0]), 3.0), (target(b, colours[1]), 1.0)], feature_scale=0.5)
    # three parts a to one part b, as positions; the pixels' moments at their own scale
    pooled = target(0.5 * torch.cat([a, a, a, b], dim=-1), torch.cat([colours[0]] * 3 + [colours[1]], dim=-1))
    for name, expected in pooled.tensors().items():
        torch.testing.assert_close(blended.tensors()[name], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        blend_targets([(target(a, colours[0]), -1.0)], 1.0)


def test_a_style_target_is_flat_on_disk_under_the_names_the_onnx_model_gives_and_typed_in_memory():
    from nstbatch.engine.targets import target_names

    torch.manual_seed(2)
    target = StyleTarget({name: Moments(*losses.feature_moments(torch.rand(1, 4, 3, 3)))
                          for name in ("relu1_1", "relu2_1")}, Moments(*losses.feature_moments(torch.rand(1, 3, 3, 3))))
    flat = target.tensors()
    assert list(flat) == target_names(("relu1_1", "relu2_1"))  # relu1_1, relu2_1, pixels, then their :mean
    again = StyleTarget.from_tensors(flat, ("relu1_1", "relu2_1"))
    assert all(torch.equal(again.tensors()[name], flat[name]) for name in flat)
    with pytest.raises(KeyError, match="relu3_1"):
        StyleTarget.from_tensors(flat, ("relu1_1", "relu2_1", "relu3_1"))
    with pytest.raises(ValueError, match="more than"):
        StyleTarget.from_tensors(flat, ("relu1_1",))
    both = StyleTarget.stack([target, again])
    assert both.layers["relu2_1"].second.shape == (2, 4, 4) and both.pixels.mean.shape == (2, 3)
    mean, covariance = target.palette()
    torch.testing.assert_close(covariance, target.pixels.second - mean.unsqueeze(-1) * mean.unsqueeze(-2))


def test_w2_layer_cost_is_zero_at_its_target_and_balanced_is_free_of_the_feature_scale():
    torch.manual_seed(2)
    style, image = torch.rand(1, 16, 6, 6), torch.rand(1, 16, 6, 6, requires_grad=True)

    def cost(scale, norm, x=image):
        mean_S, second_S = losses.feature_moments(style * scale)
        return losses.w2_layer_cost(x * scale, mean_S, second_S, losses.w2_target(mean_S, second_S), norm)

    assert float(cost(1.0, "seed", style)) < 1e-5 and float(cost(1.0, "balanced", style)) < 1e-5
    assert float(cost(1.0, "seed").detach()) > 0.01
    # balanced: W2² over E‖f‖² of the target, the same at any feature scale (eps is relative too)
    assert float(cost(1 / 255, "balanced").detach()) == pytest.approx(float(cost(1.0, "balanced").detach()), rel=1e-4)
    # all-zero features: W2² = E‖f_S‖², so 1 in balanced units, less eps's cross term (about
    # 2·√W2_EPS = 0.02 at most)
    zero = float(cost(1.0, "balanced", torch.zeros_like(style)))
    assert 0.97 < zero <= 1.0
    cost(1.0, "balanced").sum().backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().max() > 0


def test_moments_are_float32_under_bf16():
    mean, second = losses.feature_moments(torch.rand(1, 4, 3, 3).bfloat16())
    assert mean.dtype == second.dtype == torch.float32
