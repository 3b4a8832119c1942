import dataclasses

import pytest
import torch

from nstbatch.config import resolve_params
from nstbatch.errors import OptimizationError
from nstbatch.engine.optimize import initial_image, Memory, Stylization
from nstbatch.engine.vgg import build_features
from tests.conftest import pattern, style_target, stylized, targets_of, tensor


# Layers that stop the network at block 2: for tests of the loop's bookkeeping, not its quality.
LIGHT = {"style_layers": "relu1_1,relu2_1", "content_layers": "relu2_2"}


@pytest.fixture(scope="module")
def pair():
    content = tensor(pattern(64, 64))
    style = torch.zeros(1, 3, 64, 64)
    style[:, 0, :, ::5] = 1.0
    style[:, 2, ::7, :] = 0.8
    return content, style


@pytest.fixture(scope="module")
def seed_features():
    return build_features(resolve_params("seed"))


def drive(content, style, params, features, *, every=0, stop_at=None, snapshots=None, **options):
    """A ``Stylization`` driven as a caller drives one: a checkpoint at each update that reaches
    a multiple of ``every``, the image into ``snapshots`` after every update, and a stop at
    step ``stop_at`` with its checkpoint. The checkpoints taken, and the result (None when it
    stopped)."""
    saved = []
    with Stylization(content, style_target(style, params, content), params, features=features, **options) as run:
        for point in run:
            if snapshots is not None:
                snapshots.append(run.image().clone())
            if point.passed(every):
                saved.append(run.checkpoint())
            if point.step == stop_at:
                return saved + [run.checkpoint()], None
    return saved, run.result()


def stopped_at(step, content, style, params, features, **options):
    """The checkpoint of a run stopped between updates once ``step`` updates are done."""
    saved, result = drive(content, style, params, features, stop_at=step, **options)
    assert result is None, f"the run never stood at step {step}"
    return saved[-1]


def test_thirty_adam_steps_of_the_seed_preset_halve_the_total_cost(pair, seed_features):
    content, style = pair
    params = resolve_params("seed", {"steps": 30, "size": 64})
    seen = []
    result = stylized(content, style, params, features=seed_features, on_step=seen.append)
    first, last = result.history[0], result.history[-1]
    assert [p.step for p in result.history] == list(range(31)) and seen == result.history
    assert last.total <= 0.5 * first.total
    assert last.content > 0  # the content cost is live, not the source's zero
    assert result.image.shape == content.shape
    assert 0 <= result.image.min() and result.image.max() <= 1
    assert (result.image - content).abs().mean() > 0.01
    assert (result.image - style).abs().mean() > 0.01


def test_same_seed_same_image_and_another_seed_another(pair, seed_features):
    content, style = pair
    params = resolve_params("seed", {"steps": 3})
    a = stylized(content, style, params, features=seed_features).image
    b = stylized(content, style, params, features=seed_features).image
    c = stylized(content, style, resolve_params("seed", {"steps": 3, "seed": 1}), features=seed_features).image
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_inits():
    content = torch.full((1, 3, 8, 8), 0.5)
    assert torch.equal(initial_image(content, resolve_params("seed", {"init": "content"})), content)
    noisy = initial_image(content, resolve_params("seed", {"noise": 0.25}))
    assert 0.25 - 1e-6 <= noisy.min() and noisy.max() <= 0.75 + 1e-6 and noisy.std() > 0.1
    noise = initial_image(content, resolve_params("seed", {"init": "noise"}))
    assert 0 <= noise.min() and noise.max() <= 1 and noise.std() > 0.2


def test_lbfgs_lowers_the_cost(pair):
    content, style = pair
    params = resolve_params("gatys", {"steps": 15, "style_layers": "relu1_1,relu2_1,relu3_1"})
    result = stylized(content, style, params)
    assert result.history[-1].total < 0.5 * result.history[0].total


def test_style_only_and_content_only_runs(pair, seed_features):
    content, style = pair
    only_style = stylized(content, style, resolve_params("seed", {"steps": 2, "content_weight": 0}),
                          features=seed_features)
    assert only_style.history[-1].content > 0  # still reported, just not weighted
    # Without style layers only the content pulls: the noise of the start goes, towards the photo.
    only_content = resolve_params("seed", {"steps": 20, "style_layers": "", "content_layers": "relu1_2",
                                           "noise": 0.5})
    result = stylized(content, style, only_content, features=seed_features)
    start = initial_image(content, only_content)
    first, last = result.history[0], result.history[-1]
    assert last.content < 0.5 * first.content and last.total == pytest.approx(20.0 * last.content)
    assert (result.image - content).abs().mean() < 0.8 * (start - content).abs().mean()


def test_a_nan_cost_is_an_optimization_error_naming_the_step(pair, seed_features):
    content, style = pair
    broken = content.clone()
    broken[0, 0, 3, 3] = float("nan")
    with pytest.raises(OptimizationError, match="at step 0.*lower the learning rate"):
        stylized(broken, style, resolve_params("seed", {"steps": 3, "init": "content"}),
                 features=seed_features)


def test_batch_of_images_shares_one_pass_and_matches_one_by_one(pair, seed_features):
    content, style = pair
    params = resolve_params("seed", {"steps": 4, "init": "content"})
    batch = torch.cat([content, content.flip(-1)])
    together = stylized(batch, style, params, features=seed_features).image
    alone = stylized(content.flip(-1), style, params, features=seed_features).image
    torch.testing.assert_close(together[1:], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset, extra", [("seed", {}), ("gatys", {}),
                                           ("balanced", {"style_loss": "w2", "lr_end": 0.1, "scales": "1"})])
def test_preempted_and_resumed_run_continues_the_same_trajectory(pair, preset, extra):
    content, style = pair
    params = resolve_params(preset, {"steps": 8, "precision": "fp32", **extra, **LIGHT})
    features = build_features(params)
    whole = stylized(content, style, params, features=features)
    checkpoint = stopped_at(3, content, style, params, features)
    assert checkpoint.step == 3 and len(checkpoint.history) == 3
    resumed = stylized(content, style, params, features=features, resume=checkpoint)
    torch.testing.assert_close(resumed.image, whole.image, rtol=0, atol=1e-5)
    assert [p.step for p in resumed.history] == list(range(9))


def test_lbfgs_clip_every_runs_its_iterations_in_one_call_on_fewer_evaluations(pair):
    content, style = pair
    params = resolve_params("gatys", {"steps": 11, **LIGHT})
    features = build_features(params)
    runs = {}
    for every in (1, 5):
        saved, result = drive(content, style, dataclasses.replace(params, clip_every=every), features, every=10)
        runs[every] = result, saved
    (_, one_saved), (five, five_saved) = runs[1], runs[5]
    # a call of five iterations is one reported step: 0, 5, 10, then the end
    assert [p.step for p in five.history] == [0, 5, 10, 11] and [c.step for c in five_saved] == [10]
    assert five.history[-1].total < 0.5 * five.history[0].total
    assert 0 <= five.image.min() and five.image.max() <= 1
    # the optimizer's own count: each call evaluates its start again; within a call the line
    # search's last evaluation serves the next iteration
    evaluations = [saved[0].descent.optimizer["state"][0]["func_evals"] for saved in (one_saved, five_saved)]
    assert evaluations[1] < 0.75 * evaluations[0]
    # stopped before its second call (step 5), resumed: the same trajectory
    every5 = dataclasses.replace(params, clip_every=5)
    with Stylization(content, style_target(style, every5, content), every5, features=features) as run:
        assert [point.step for point in run] == [0, 5, 10]  # between calls: no point inside one
    stopped = stopped_at(5, content, style, every5, features)
    resumed = stylized(content, style, every5, features=features, resume=stopped)
    assert torch.equal(resumed.image, five.image)


def test_clip_every_is_for_lbfgs():
    from nstbatch.errors import ParamError

    with pytest.raises(ParamError, match="clip_every 5 groups L-BFGS iterations"):
        resolve_params("seed", {"clip_every": 5})
    assert resolve_params("gatys", {"clip_every": "5"}).clip_every == 5


def test_the_learning_rate_falls_along_a_half_cosine_within_each_scale(pair):
    from nstbatch.engine.descent import Descent
    from nstbatch.engine.optimize import stages

    content, _ = pair
    params = resolve_params("seed", {"steps": 10, "lr": 0.04, "lr_end": 0.25, "scales": "0.5,1",
                                     "scale_steps": "0.6,0.4", **LIGHT})
    image = content.clone().requires_grad_(True)
    for stage in stages(params, *content.shape[-2:]):
        descent = Descent(image, None, params, stage, None)  # Adam: no objective before its steps
        rates = [descent.learning_rate(step) for step in range(stage.start, stage.end)]
        assert rates[0] == pytest.approx(0.04) and rates[-1] == pytest.approx(0.01)
        assert all(a > b for a, b in zip(rates, rates[1:]))
        middle = (stage.end - stage.start - 1) / 2  # a half cosine: halfway at the middle step
        assert descent.learning_rate(stage.start + middle) == pytest.approx(0.025)
    constant = Descent(image, None, resolve_params("seed", {"lr_end": 1}), stages(params, *content.shape[-2:])[-1],
                        None)
    assert constant.learning_rate(7) == resolve_params("seed").lr


def test_checkpoint_every_n_steps(pair, seed_features):
    content, style = pair
    saved, _ = drive(content, style, resolve_params("seed", {"steps": 7}), seed_features, every=3)
    assert [c.step for c in saved] == [3, 6]


def test_bf16_precision_runs_with_float32_grams_and_stays_close_to_fp32(pair, seed_features):
    content, style = pair
    fp32 = stylized(content, style, resolve_params("seed", {"steps": 5}), features=seed_features)
    bf16 = stylized(content, style, resolve_params("seed", {"steps": 5, "precision": "bf16"}),
                    features=seed_features)
    assert bf16.history[-1].total < bf16.history[0].total
    assert (bf16.image - fp32.image).abs().mean() < 0.02  # a few 8-bit levels at most, on average
    from nstbatch.engine.criterion import _scaled
    acts = _scaled(seed_features, content, ["relu1_1"], 1.0, torch.bfloat16)
    assert acts["relu1_1"].dtype == torch.float32  # the costs see float32


def test_fp16_needs_a_gpu(pair, seed_features):
    from nstbatch.errors import UsageError

    with pytest.raises(UsageError, match="fp16 needs a GPU"):
        stylized(*pair, resolve_params("seed", {"steps": 1, "precision": "fp16"}), features=seed_features)


def test_report_every_thins_the_history_but_keeps_the_end(pair, seed_features):
    result = stylized(*pair, resolve_params("seed", {"steps": 7}), features=seed_features, report_every=3)
    assert [p.step for p in result.history] == [0, 3, 6, 7]


def test_lbfgs_with_bf16_keeps_the_default_layout(pair):
    params = resolve_params("gatys", {"steps": 2, "precision": "bf16", "style_layers": "relu1_1",
                                      "content_layers": "relu2_2"})
    features = build_features(params)
    # L-BFGS flattens the gradient with .view(-1): the image must keep the default layout,
    # where Adam under bf16 takes channels-last.
    run = Stylization(pair[0], style_target(pair[1], params, pair[0]), params, features=features)
    assert run.memory_format == torch.contiguous_format
    assert run.network_format == torch.channels_last  # the network takes bf16's fast layout all the same
    adam = resolve_params("seed", {"precision": "bf16"})
    assert Stylization(pair[0], style_target(pair[1], adam, pair[0]), adam, features=features).memory_format == torch.channels_last
    result = stylized(*pair, params, features=features)
    assert result.history[-1].total <= result.history[0].total and result.image.is_contiguous()


def test_a_run_never_changes_the_network_it_is_given(pair, monkeypatch):
    """One network serves every job of a worker: a bf16 run takes a channels-last twin of an
    fp32 network (made once), activation checkpointing is an argument of the forward, and the
    given network is the same before, during and after the run, even one the caller leaves."""
    content, style = pair
    params = resolve_params("seed", {"steps": 4, "precision": "bf16", "style_layers": "relu1_1",
                                     "content_layers": "relu2_2"})
    fp32 = build_features(dataclasses.replace(params, precision="fp32"))
    weights = [p for p in fp32.parameters() if p.dim() == 4]
    checkpointed = []
    real = type(fp32)._forward_checkpointed
    monkeypatch.setattr(type(fp32), "_forward_checkpointed",
                        lambda self, *a: checkpointed.append(self) or real(self, *a))
    seen = []
    with pytest.raises(KeyboardInterrupt):
        with Stylization(content, style_target(style, params, content), params, features=fp32,
                         memory=Memory(True)) as run:
            for point in run:
                seen.append(all(w.is_contiguous() for w in weights))
                if point.step == 2:
                    raise KeyboardInterrupt  # the caller leaves between two updates
    assert seen == [True] * 3 and all(w.is_contiguous() for w in weights)
    twin = run.features
    assert twin is not fp32 and twin.memory_format == torch.channels_last
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in twin.parameters() if w.dim() == 4)
    assert checkpointed and set(map(id, checkpointed)) == {id(twin)}  # asked for, through the forward
    assert Stylization(content, style_target(style, params, content), params, features=fp32).features is twin
    bf16 = build_features(params)  # built for the run's precision: taken as it is
    assert bf16.memory_format == torch.channels_last
    assert Stylization(content, style_target(style, params, content), params, features=bf16).features is bf16
    checkpointed.clear()
    stylized(content, style, params, features=bf16)  # Memory(): no checkpointing on a CPU
    assert checkpointed == []


def test_a_stylization_hands_its_caller_a_point_between_every_two_updates(pair, seed_features):
    content, style = pair
    params = resolve_params("seed", {"steps": 5, "save_every": 2, **LIGHT})
    images = []
    with Stylization(content, style_target(style, params, content), params, features=seed_features) as run:
        points = []
        for point in run:
            points.append(point)
            images.append(run.image().clone())
    # before the first update, then after each but the last (whose image is the result)
    assert [tuple(p) for p in points] == [(0, 0), (1, 0), (2, 1), (3, 2), (4, 3)]
    assert [p.step for p in points if p.passed(2)] == [2, 4] and not any(p.passed(0) for p in points)
    assert torch.equal(images[0], initial_image(content, params))
    assert [p.step for p in run.result().history] == list(range(6))
    with pytest.raises(RuntimeError, match="not run to its end"):
        Stylization(content, style_target(style, params, content), params, features=seed_features).result()


@pytest.mark.parametrize("carry", ["image", "detail"])
def test_multi_scale_runs_coarse_to_fine_and_resumes_across_scales(pair, seed_features, carry):
    from nstbatch.engine.optimize import stages

    content, style = pair
    params = resolve_params("seed", {"steps": 9, "scales": "0.5,1", "scale_steps": "0.67,0.33", "scale_carry": carry})
    assert stages(params, 64, 64) == [(0, 6, (32, 32)), (6, 9, (64, 64))]
    whole = stylized(content, style, params, features=seed_features)
    assert whole.image.shape == content.shape and [p.step for p in whole.history] == list(range(10))
    assert whole.history[-1].total < whole.history[0].total
    for stop_at in (4, 6, 7):  # inside the coarse scale, at the boundary, inside the fine one
        checkpoint = stopped_at(stop_at, content, style, params, seed_features)
        resumed = stylized(content, style, params, features=seed_features, resume=checkpoint)
        torch.testing.assert_close(resumed.image, whole.image, rtol=0, atol=1e-5)
    saved, _ = drive(content, style, params, seed_features, every=3)
    assert [c.step for c in saved] == [3, 6]
    resumed = stylized(content, style, params, features=seed_features, resume=saved[1])
    torch.testing.assert_close(resumed.image, whole.image, rtol=0, atol=1e-5)


def test_the_detail_carry_starts_a_scale_from_its_content_plus_the_coarse_departure_upsampled(pair, seed_features):
    from nstbatch.engine.pixels import resize_tensor

    content, style = pair
    # all steps at half size, none at full: the output is what the full scale starts from
    params = {"steps": 4, "scales": "0.5,1", "scale_steps": "1,0", "init": "content", "style_size": 64, **LIGHT}
    image = stylized(content, style, resolve_params("seed", params), features=seed_features).image
    detail = stylized(content, style, resolve_params("seed", {**params, "scale_carry": "detail"}),
                      features=seed_features).image
    half = resize_tensor(content, (32, 32), "bilinear")
    coarse = stylized(half, style, resolve_params("seed", {**params, "scales": "1", "scale_steps": "1"}),
                      features=seed_features).image  # the half scale's own result

    def up(x):
        return torch.nn.functional.interpolate(x, size=(64, 64), mode="bicubic", align_corners=False)

    torch.testing.assert_close(image, up(coarse).clamp(0, 1), rtol=0, atol=1e-5)
    # the content's own fine detail, content - up(half), is in the start, and a departure below
    # zero (darker than the content) is carried as one
    torch.testing.assert_close(detail, (content + up(coarse - half)).clamp(0, 1), rtol=0, atol=1e-5)
    assert (coarse - half).min() < -0.05


def test_the_palette_init_is_the_content_in_each_style_s_colours(pair, seed_features):
    from nstbatch.engine.targets import StyleTarget

    content, style = pair
    params = resolve_params("seed", {"init": "palette", **LIGHT})
    warm = (style * torch.tensor([1.0, 0.6, 0.3]).view(1, 3, 1, 1)).clamp(0, 1)
    cold = style.flip(1)
    targets = targets_of(seed_features, content, warm, params)
    torch.testing.assert_close(targets.style.pixels.mean, warm.mean(dim=(2, 3)))
    start = initial_image(content, params, colors=targets.style.palette())
    assert (start.mean(dim=(2, 3)) - warm.mean(dim=(2, 3))).abs().max() < 2 / 255
    # each image of a mixed batch gets its own style's colours; with noise, the same plus noise
    stacked = StyleTarget.stack([targets.style, targets_of(seed_features, content, cold, params).style])
    both = initial_image(torch.cat([content, content]), params, colors=stacked.palette())
    torch.testing.assert_close(both[:1], start)
    assert (both[1:].mean(dim=(2, 3)) - cold.mean(dim=(2, 3))).abs().max() < 2 / 255
    noisy = initial_image(content, dataclasses.replace(params, init="palette+noise"), colors=targets.style.palette())
    assert 0.05 < (noisy - start).abs().mean() < 0.2
    # palette_mix: that far from the content's own colours to the palette (0: the content itself)
    half = initial_image(content, dataclasses.replace(params, palette_mix=0.5), colors=targets.style.palette())
    torch.testing.assert_close(half, (content + start) / 2)
    torch.testing.assert_close(initial_image(content, dataclasses.replace(params, palette_mix=0.0),
                                             colors=targets.style.palette()), content)
    result = stylized(content, style, dataclasses.replace(params, steps=0), features=seed_features)
    torch.testing.assert_close(result.image, initial_image(content, params, colors=targets_of(
        seed_features, content, style, params).style.palette()))


def test_a_coarse_scale_too_small_for_the_layers_is_skipped_and_a_full_size_too_small_refused(pair, seed_features):
    from nstbatch.errors import UsageError
    from nstbatch.engine.optimize import stages

    params = resolve_params(None, {"steps": 10, "scales": "0.1,0.5,1", "scale_steps": "0.5,0.3,0.2"})
    # 6 px is below relu5_1's 16: its 5 steps go to the half-size stage
    assert stages(params, 64, 64) == [(0, 8, (32, 32)), (8, 10, (64, 64))]
    assert stages(params, 400, 400) == [(0, 5, (40, 40)), (5, 8, (200, 200)), (8, 10, (400, 400))]
    result = stylized(*pair, resolve_params(None, {"steps": 2, "precision": "fp32"}), features=seed_features)
    assert result.image.shape == pair[0].shape  # the default's half-size stage (32 px) ran too
    with pytest.raises(UsageError, match="at scale 1"):
        stages(params, 12, 40)


@pytest.mark.parametrize("average", [0.0, 0.8])
def test_a_batch_checkpoint_sliced_per_image_resumes_each_image_alone(pair, seed_features, average):
    from nstbatch.jobs.checkpoints import slice_checkpoint as _slice
    content, style = pair
    params = resolve_params("seed", {"steps": 6, "init": "content", "average": average, **LIGHT})
    batch = torch.cat([content, content.flip(-1)])
    whole = stylized(batch, style, params, features=seed_features).image
    one = _slice(stopped_at(3, batch, style, params, seed_features), 1, 2)
    assert one.image.shape[0] == 1 and one.descent.optimizer["state"][0]["exp_avg"].shape[0] == 1
    assert (one.descent.average is None) == (average == 0) and (one.descent.average is None or one.descent.average.shape[0] == 1)
    resumed = stylized(content.flip(-1), style, params, features=seed_features, resume=one).image
    torch.testing.assert_close(resumed, whole[1:], rtol=1e-4, atol=1e-4)


def test_activation_checkpointing_gives_the_same_run(pair, seed_features):
    content, style = pair
    params = resolve_params("balanced", {"steps": 4, "precision": "fp32"})
    calls = []
    hook = seed_features.features[0].register_forward_hook(lambda *a: calls.append(1))
    plain = stylized(content, style, params, features=seed_features, memory=Memory(False))
    plain_calls, calls[:] = len(calls), []
    checkpointed = stylized(content, style, params, features=seed_features, memory=Memory(True))
    hook.remove()
    assert len(calls) > plain_calls  # the first block really was recomputed in backward passes
    torch.testing.assert_close(checkpointed.image, plain.image, rtol=0, atol=1e-5)
    calls[:] = []
    hook = seed_features.features[0].register_forward_hook(lambda *a: calls.append(1))
    stylized(content, style, params, features=seed_features, memory=Memory(False))
    hook.remove()
    assert len(calls) == plain_calls  # nothing of the checkpointed run stayed with the network


def test_a_batch_reports_each_images_own_final_costs(pair, seed_features):
    content, style = pair
    params = resolve_params("seed", {"steps": 3, "init": "content"})
    batch = stylized(torch.cat([content, content.flip(-2) * 0.5]), style, params, features=seed_features)
    alone = stylized(content.flip(-2) * 0.5, style, params, features=seed_features)
    assert len(batch.finals) == 2 and batch.finals[0].total != pytest.approx(batch.finals[1].total)
    # (batched CPU convolutions round differently, more so on some CPUs: 2.5e-4 on an AMD EPYC)
    assert batch.final(1).total == pytest.approx(alone.final(0).total, rel=1e-3)
    assert batch.history[-1].total == pytest.approx((batch.finals[0].total + batch.finals[1].total) / 2, rel=1e-5)


@pytest.mark.parametrize("style_loss", ["gram", "w2"])
def test_a_mixed_style_batch_pulls_each_image_towards_its_own_style(pair, seed_features, style_loss):
    # Each image of a batch gets its own (1, C, C) Gram target, stacked into (B, C, C). Exact
    # equality with solo runs holds only in exact arithmetic: batched CPU convolutions differ
    # in the last bits, and Adam turns that into full steps where a gradient is ~0 (as for
    # same-style batches, docs/runs.md: batches). So: each image lands next to its own solo run,
    # far from a run towards the other style, with the same final costs.
    from nstbatch.engine.targets import StyleTarget, blend_targets, torch_style_targets

    content, style = pair
    params = resolve_params("seed", {"steps": 4, "init": "content", "style_loss": style_loss})
    other = style.flip(-1).roll(3, -2) * 0.5
    own = [blend_targets([(torch_style_targets(seed_features, s, params.style_layers), 1.0)], params.feature_scale)
           for s in (style, other)]
    stacked = StyleTarget.stack(own)  # (2, C, C), (2, C)
    batch = torch.cat([content, content.flip(-1)])
    together = stylized(batch, stacked, params, features=seed_features)
    for index in range(2):
        image = batch[index:index + 1]
        alone = stylized(image, own[index], params, features=seed_features)
        swapped = stylized(image, own[1 - index], params, features=seed_features)
        mine = together.image[index:index + 1]
        assert (mine - alone.image).abs().mean() * 10 < (mine - swapped.image).abs().mean()
        assert together.final(index).style == pytest.approx(alone.final().style, rel=0.02)


def test_the_averaged_output_is_the_bias_corrected_ema_of_the_iterates(pair, seed_features):
    content, style = pair
    plain = resolve_params("seed", {"steps": 6, **LIGHT})
    iterates = []  # the image before step 1, after steps 1..5, then after step 6 (the result)
    _, result = drive(content, style, plain, seed_features, snapshots=iterates)
    last = result.image
    iterates = iterates[1:] + [last]
    decay, biased, weight = 0.8, torch.zeros_like(content), 0.0
    for image in iterates:  # by hand
        biased = decay * biased + (1 - decay) * image
        weight = 1 - (1 - weight) * decay
    averaged = stylized(content, style, dataclasses.replace(plain, average=decay), features=seed_features)
    torch.testing.assert_close(averaged.image, biased / weight, rtol=0, atol=1e-6)
    assert not torch.allclose(averaged.image, last, atol=1e-3)  # it is not the last iterate
    assert averaged.history == result.history[:-1] + averaged.history[-1:]


@pytest.mark.parametrize("stop_at", [2, 6, 7])  # in the coarse scale, at the boundary, in the fine one
def test_a_resumed_averaged_run_ends_exactly_as_an_uninterrupted_one(pair, seed_features, stop_at):
    content, style = pair
    params = resolve_params("seed", {"steps": 9, "scales": "0.5,1", "scale_steps": "0.67,0.33",
                                     "average": 0.7, **LIGHT})
    whole = stylized(content, style, params, features=seed_features)
    checkpoint = stopped_at(stop_at, content, style, params, seed_features)
    assert checkpoint.descent.average is not None
    resumed = stylized(content, style, params, features=seed_features, resume=checkpoint)
    assert torch.equal(resumed.image, whole.image)
    saved, _ = drive(content, style, params, seed_features, every=6)  # at the scale boundary
    assert torch.equal(stylized(content, style, params, features=seed_features, resume=saved[0]).image,
                       whole.image)


def test_a_checkpoint_file_keeps_the_average_and_belongs_to_its_params_hash(tmp_path, pair, seed_features):
    from nstbatch.jobs.checkpoints import load_checkpoint, save_checkpoint
    from nstbatch.jobs.ledger import StateDir
    from nstbatch.io.manifest import Job

    content, style = pair
    params = resolve_params("seed", {"steps": 4, "average": 0.5, **LIGHT})
    saved, _ = drive(content, style, params, seed_features, every=2)
    state, job = StateDir(tmp_path), Job("j", tmp_path / "c.png", ((tmp_path / "s.png", 1.0),), tmp_path / "o.png",
                                         params, "m.csv:2")
    save_checkpoint(state, job, "hash-a", saved[0])
    loaded = load_checkpoint(state, job, "hash-a")
    assert loaded.step == 2 and torch.equal(loaded.descent.average, saved[0].descent.average)
    assert loaded.descent.average_weight == saved[0].descent.average_weight == 0.75
    assert torch.equal(stylized(content, style, params, features=seed_features, resume=loaded).image,
                       stylized(content, style, params, features=seed_features).image)
    assert load_checkpoint(state, job, "hash-b") is None and not state.checkpoint_path("j").exists()
    # the stopping rule's last check travels with it too
    stopping = dataclasses.replace(params, stop_tol=0.05, stop_window=2)
    checkpoint = stopped_at(3, content, style, stopping, seed_features)
    save_checkpoint(state, job, "hash-c", checkpoint)
    loaded = load_checkpoint(state, job, "hash-c")
    assert loaded.descent.reference is not None and torch.equal(loaded.descent.reference, checkpoint.descent.reference)


def test_a_warm_scale_starts_from_the_previous_scale_s_moments_upsampled(pair, seed_features):
    import torch.nn.functional as F

    from nstbatch.engine.descent import Descent
    from nstbatch.engine.optimize import stages

    content, style = pair
    params = resolve_params("seed", {"steps": 9, "scales": "0.5,1", "scale_steps": "0.67,0.33",
                                     "scale_start": "warm", **LIGHT})
    end = stopped_at(6, content, style, params, seed_features)  # the coarse scale's last state
    fine = Descent(content.clone().requires_grad_(True), None, params, stages(params, 64, 64)[1], None)
    fine.warm(end.descent.optimizer)  # the fine scale's start
    old, new = end.descent.optimizer["state"][0], fine.optimizer.state_dict()["state"][0]
    assert new["exp_avg"].shape[-2:] == (64, 64) and float(new["step"]) == float(old["step"]) == 6
    torch.testing.assert_close(new["exp_avg"], F.interpolate(old["exp_avg"], size=(64, 64), mode="bicubic"))
    torch.testing.assert_close(new["exp_avg_sq"], F.interpolate(old["exp_avg_sq"], size=(64, 64),
                                                                mode="bilinear").clamp_min(0))
    fresh = stylized(content, style, dataclasses.replace(params, scale_start="fresh"), features=seed_features)
    warm = stylized(content, style, params, features=seed_features)
    assert not torch.allclose(warm.image, fresh.image, atol=1e-3)
    for checkpoint in (end, stopped_at(7, content, style, params, seed_features)):  # resumed: as it would have
        assert torch.equal(stylized(content, style, params, features=seed_features, resume=checkpoint).image,
                           warm.image)


def test_a_warm_start_needs_adam():
    from nstbatch.errors import ParamError

    with pytest.raises(ParamError, match="scale_start warm carries Adam's moments"):
        resolve_params("gatys", {"scale_start": "warm"})


def test_the_stopping_rule_ends_a_scale_whose_cost_is_flat_and_skips_its_remaining_steps(pair, seed_features):
    content, style = pair
    flat = resolve_params("seed", {"steps": 40, "stop_tol": 1e-4, "stop_window": 4, "init": "content",
                                   "style_weight": 0, **LIGHT})  # starts at its minimum: nothing moves
    result = stylized(content, style, flat, features=seed_features)
    assert result.converged == [4] and [p.step for p in result.history] == [0, 1, 2, 3, 40]
    torch.testing.assert_close(result.image, content)
    # a real problem: each scale stops where its cost flattens, never before it falls
    falling = resolve_params("seed", {"steps": 40, "stop_tol": 0.05, "stop_window": 4, "scales": "0.5,1",
                                      "scale_steps": "0.5,0.5", **LIGHT})
    result = stylized(content, style, falling, features=seed_features)
    assert result.converged == [8, 32] and result.history[-1].step == 40
    assert stylized(content, style, dataclasses.replace(falling, stop_tol=0), features=seed_features).converged == []


@pytest.mark.parametrize("stop_at", [6, 20, 28])  # before a check, where the coarse scale stopped, in the fine
def test_a_run_with_the_stopping_rule_resumes_to_the_same_end(pair, seed_features, stop_at):
    content, style = pair
    params = resolve_params("seed", {"steps": 40, "stop_tol": 0.05, "stop_window": 4, "scales": "0.5,1",
                                     "scale_steps": "0.5,0.5", "average": 0.5, **LIGHT})
    whole = stylized(content, style, params, features=seed_features)
    checkpoint = stopped_at(stop_at, content, style, params, seed_features)
    resumed = stylized(content, style, params, features=seed_features, resume=checkpoint)
    assert torch.equal(resumed.image, whole.image)
    assert resumed.converged == [step for step in whole.converged if step > stop_at]


def test_a_checkpoint_file_keeps_the_descents_undone_updates_and_shrunk_rate(tmp_path):
    from nstbatch.engine.descent import DescentState
    from nstbatch.engine.optimize import Checkpoint
    from nstbatch.io.manifest import Job
    from nstbatch.jobs.checkpoints import load_checkpoint, save_checkpoint
    from nstbatch.jobs.ledger import StateDir

    params = resolve_params("seed", {"steps": 4})
    state, job = StateDir(tmp_path), Job("j", tmp_path / "c.png", ((tmp_path / "s.png", 1.0),), tmp_path / "o.png",
                                         params, "m.csv:2")
    said = ["step 3: the cost became nan; restarted from step 2's image, learning rate x0.1"]
    save_checkpoint(state, job, "h", Checkpoint(3, torch.zeros(1, 3, 8, 8), [], DescentState({}, lr_factor=0.1), said))
    loaded = load_checkpoint(state, job, "h")
    assert loaded.descent.lr_factor == 0.1 and loaded.recoveries == said


def test_a_checkpoint_file_written_before_the_descent_had_one_record_still_resumes(tmp_path):
    """The file keeps format 1: the descent's fields flat beside the image, as runs already
    stopped have them on disk."""
    from nstbatch.jobs.checkpoints import load_checkpoint
    from nstbatch.io.manifest import Job
    from nstbatch.jobs.ledger import StateDir

    params = resolve_params("seed", {"steps": 4})
    state, job = StateDir(tmp_path), Job("j", tmp_path / "c.png", ((tmp_path / "s.png", 1.0),), tmp_path / "o.png",
                                         params, "m.csv:2")
    moments = {"state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.ones(1, 3, 8, 8)}}, "param_groups": []}
    entry = {"format": 1, "params_hash": "h", "step": 2, "image": torch.full((1, 3, 8, 8), 0.5),
             "optimizer": moments, "history": torch.zeros(3, 5, dtype=torch.float64), "scale": 1.0,
             "average": torch.full((1, 3, 8, 8), 0.25), "average_weight": 0.51, "reference": None,
             "lr_factor": 1.0, "recoveries": []}
    state.checkpoint_path(job.id).parent.mkdir(parents=True)
    torch.save(entry, state.checkpoint_path(job.id))
    loaded = load_checkpoint(state, job, "h")
    assert loaded.step == 2 and len(loaded.history) == 3 and loaded.descent.average_weight == 0.51
    assert torch.equal(loaded.descent.optimizer["state"][0]["exp_avg"], torch.ones(1, 3, 8, 8))
    torch.testing.assert_close(loaded.descent.image(loaded.image), torch.full((1, 3, 8, 8), 0.25 / 0.51))
