"""Prints at any size: a step taken tile by tile equals the untiled step (engine/tiles.py)."""
import dataclasses

import pytest
import torch

from nstbatch.config import LBFGS_HISTORY, resolve_params
from nstbatch.engine.criterion import Criterion, job_targets
from nstbatch.engine.optimize import Memory
from nstbatch.engine.vgg import build_features
from nstbatch.engine.tiles import plan_tiles, read
from tests.conftest import pattern, stylized, targets_of, tensor

# Three poolings deep (stride 8, margin 16): several tiles on a small image, in seconds.
LAYERS = {"style_layers": "relu1_1,relu2_1,relu3_1,relu4_1", "content_layers": "relu3_2", "precision": "fp32"}


@pytest.fixture(scope="module")
def pair():
    content = tensor(pattern(100, 84))
    style = tensor(pattern(64, 64, phase=2.0)).flip(1)
    return content, style


@pytest.fixture(scope="module")
def features():
    return build_features(resolve_params("balanced", LAYERS))


def test_tiles_partition_the_image_on_the_network_s_grid_with_a_margin_past_the_receptive_field():
    tiles = plan_tiles(84, 100, 32, ("relu1_1", "relu4_1"))
    assert len(tiles) == 3 * 3 and tiles[-1].core == (64, 84, 64, 100)  # the 4 px sliver joined its neighbour
    covered = torch.zeros(84, 100, dtype=torch.int32)
    for tile in tiles:
        top, bottom, left, right = tile.core
        covered[top:bottom, left:right] += 1
        assert top % 8 == 0 and left % 8 == 0  # relu4_1 is three poolings deep
        c_top, c_bottom, c_left, c_right = tile.crop
        assert c_top == max(0, top - 40) and c_bottom == min(84, bottom + 40)  # relu4_1 sees 37 px: 40
        assert c_left == max(0, left - 40) and c_right == min(100, right + 40)
    assert torch.equal(covered, torch.ones_like(covered))  # every pixel in exactly one core
    assert len(plan_tiles(84, 100, 128, ("relu1_1", "relu4_1"))) == 1


def test_a_tiled_read_gives_the_whole_image_s_activations(pair, features):
    content, _ = pair
    params = resolve_params("balanced", LAYERS)
    layers = ("relu1_1", "relu3_2", "relu4_1")
    whole = features(content, layers)
    tiled, _ = read(lambda crop, names: features(crop, names), content, plan_tiles(84, 100, 32, layers), layers)
    for name in layers:
        assert tiled[name].shape == whole[name].shape  # float rounding apart (convolutions of other sizes):
        assert (tiled[name] - whole[name]).abs().max() < 1e-5 * whole[name].abs().max()
    assert params.feature_layers  # (the network reads every layer the costs need)


@pytest.mark.parametrize("extra", [{}, {"style_loss": "w2"}, {"style_norm": "seed", "content_norm": "seed",
                                                               "style_cap": 0, "tv_weight": 0.5},
                                   {"temporal_weight": 30.0}])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_tiled_step_has_the_untiled_costs_and_gradient(pair, features, extra, dtype):
    # In float64 the two agree to 1e-9: the tiled gradient is the untiled one, exactly. In
    # float32 they differ by rounding (sums in another order, convolutions of other sizes):
    # within 1e-4 of the gradient's norm for the Gram costs; W2's eigenvalue roots (and their
    # floor) amplify the rounding of its moments to a few 1e-3.
    content, style = (x.to(dtype) for x in pair)
    network = features.to(dtype)
    params = resolve_params("balanced", {**LAYERS, **extra})
    tiles = plan_tiles(84, 100, 32, params.feature_layers)
    assert len(tiles) > 4
    try:
        untiled_targets = targets_of(network, content, style, params)
        if params.temporal_weight:  # a video frame tied to an earlier output, trusted in part
            earlier = content.flip(-1)
            trusted = (torch.rand(1, 1, 84, 100, generator=torch.Generator().manual_seed(5)) > 0.3).to(dtype)
            untiled_targets = dataclasses.replace(untiled_targets, temporal=((earlier, trusted),))
        tiled_targets = job_targets(network, content, untiled_targets.style, params, tiles=tiles)
        for name in params.content_layers:
            torch.testing.assert_close(tiled_targets.content[name], untiled_targets.content[name], rtol=1e-4, atol=1e-4)
        if untiled_targets.style_factor is not None:
            torch.testing.assert_close(tiled_targets.style_factor, untiled_targets.style_factor, rtol=1e-4, atol=0)
        image = (content + 0.2 * torch.rand(content.shape, generator=torch.Generator().manual_seed(3)).to(dtype)).clamp(0, 1)
        # one criterion, its gradient taken whole and tile by tile (tiles.tiled_gradient)
        whole_image = image.clone().requires_grad_(True)
        whole = Criterion(network, untiled_targets, params).gradient(whole_image, lambda loss: loss * 3.0)
        tiled_image = image.clone().requires_grad_(True)
        tiled = Criterion(network, untiled_targets, params, tiles=tiles).gradient(tiled_image, lambda loss: loss * 3.0)
    finally:
        features.float()
    for a, b in zip(tiled, whole):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-7)
    error = float((tiled_image.grad - whole_image.grad).norm() / whole_image.grad.norm())
    tolerance = 1e-9 if dtype == torch.float64 else 5e-3 if params.style_loss == "w2" else 1e-4
    assert error < tolerance
    assert not tiled[0].requires_grad


def test_a_tiled_run_ends_next_to_the_untiled_one_and_resumes_exactly(pair, features):
    from tests.test_optimize import stopped_at

    content, style = pair
    params = resolve_params("balanced", {**LAYERS, "steps": 6, "scales": "0.5,1", "scale_steps": "0.5,0.5"})
    untiled = stylized(content, style, params, features=features)
    tiled = stylized(content, style, params, features=features, memory=Memory(tile=32))
    assert (tiled.image - untiled.image).abs().max() < 2 / 255
    assert tiled.history[-1].total == pytest.approx(untiled.history[-1].total, rel=1e-3)
    for step in (2, 4):  # in the coarse scale (one tile), in the fine one (tiled)
        checkpoint = stopped_at(step, content, style, params, features, memory=Memory(tile=32))
        assert torch.equal(stylized(content, style, params, features=features, memory=Memory(tile=32), resume=checkpoint).image,
                           tiled.image)
    lbfgs = dataclasses.replace(resolve_params("fast", {**LAYERS, "steps": 4}), scales=(1.0,), scale_steps=(1.0,))
    assert (stylized(content, style, lbfgs, features=features, memory=Memory(tile=32)).image
            - stylized(content, style, lbfgs, features=features).image).abs().max() < 2 / 255


@pytest.mark.slow  # L-BFGS's line searches, tiled: a minute or two
def test_a_quality_job_resumed_in_its_pyramid_and_its_tiles_ends_as_an_uninterrupted_one(pair, features):
    # The quality preset as it is (L-BFGS, three scales, the stopping rule), on shallow layers and a
    # small budget; the finer scales are stepped in 32 px tiles. Stopped at each scale, and again
    # after its stopping rule has been checked, it continues bit for bit.
    from tests.test_optimize import stopped_at

    content, style = pair
    # (a loose stop_tol so that scales stop early here: the first at 15, the tiled last at 38)
    params = resolve_params("quality", {**LAYERS, "steps": 40, "stop_window": 4, "stop_tol": 0.3})
    memory = Memory(tile=32)
    whole = stylized(content, style, params, features=features, memory=memory)
    assert 15 in whole.converged and whole.history[-1].step == 40
    # scales: 0-16 at 50 px, 16-28 at 71, 28-40 at 100 in tiles; L-BFGS stands every clip_every
    # (5) iterations from a scale's start
    for step in (5, 10, 21, 28, 33):
        assert any(p.step == step for p in whole.history), step  # the run stood there
        checkpoint = stopped_at(step, content, style, params, features, memory=memory)
        resumed = stylized(content, style, params, features=features, memory=memory, resume=checkpoint)
        assert torch.equal(resumed.image, whole.image), step
        assert resumed.converged == [s for s in whole.converged if s > step]  # its own stops


def test_the_memory_check_steps_a_print_in_the_largest_tile_that_fits():
    from nstbatch.jobs.memory import HEADROOM, TILE_SIDES, estimate, plan_memory

    params = resolve_params("balanced", {"precision": "fp32"})
    limit = 4 * 2**30
    assert estimate(params, 4096, 4096, checkpointing=True).bytes > HEADROOM * limit  # too big untiled
    plan = plan_memory(params, 4096, 4096, limit)
    assert plan.tile in TILE_SIDES and plan.bytes <= HEADROOM * limit and not plan.checkpointing
    assert plan_memory(params, 512, 512, limit).tile is None  # what fits is never tiled
    assert plan_memory(dataclasses.replace(params, tile="off"), 4096, 4096, limit) is None
    assert plan_memory(dataclasses.replace(params, tile="1024"), 4096, 4096, None).tile == 1024
    # the network's part is a tile's: a larger print adds only its pixels (and Adam's moments)
    small, large = (estimate(params, side, side, tile=1024).bytes for side in (4096, 8192))
    assert large - small < 6 * 4 * 3 * (8192 ** 2 - 4096 ** 2) * 1.01
    assert "in tiles of 1024 px" in str(estimate(params, 4096, 4096, tile=1024))
    # L-BFGS keeps two image-sized vectors an iteration (up to its history): a print counts them
    lbfgs = dataclasses.replace(params, optimizer="lbfgs", steps=200)
    extra = estimate(lbfgs, 4096, 4096, tile=1024).bytes - estimate(params, 4096, 4096, tile=1024).bytes
    assert extra >= 2 * LBFGS_HISTORY * 4 * 3 * 4096 ** 2
    short = dataclasses.replace(lbfgs, steps=10, scales=(1.0,), scale_steps=(1.0,))  # 10 iterations keep 10
    assert estimate(short, 4096, 4096, tile=1024).bytes < estimate(lbfgs, 4096, 4096, tile=1024).bytes


def test_run_steps_a_job_in_the_tiles_it_asks_for(folder, capsys, monkeypatch):
    from PIL import Image

    import nstbatch.engine.optimize as engine
    from tests.conftest import pixels, run_cli

    planned = []
    monkeypatch.setattr(engine, "plan_tiles", lambda *a: planned.append(a[2]) or plan_tiles(*a))

    Image.fromarray(pattern(100, 84)).save(folder / "c.png")
    Image.fromarray(pattern(64, 64, phase=2.0)).save(folder / "s.png")
    cells = '4,"relu1_1,relu2_1,relu3_1,relu4_1",relu3_2,fp32'
    (folder / "m.csv").write_text("id,content,style,output,size,steps,style_layers,content_layers,precision,tile\n"
                                  f"whole,c.png,s.png,whole.png,100,{cells},off\n"
                                  f"tiled,c.png,s.png,tiled.png,100,{cells},64\n")
    code, out, err = run_cli(capsys, "run", folder / "m.csv", "-q", "--targets", "torch")
    assert code == 0, err
    assert set(planned) == {64}  # the tiled job's stages, and only its
    difference = abs(pixels(folder / "whole.png") - pixels(folder / "tiled.png"))
    assert difference.mean() < 0.5 and difference.max() <= 3
