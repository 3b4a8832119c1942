"""The temporal terms of video stylization (engine/temporal.py): closed forms first."""
import dataclasses

import numpy as np
import pytest
import torch

from nstbatch.engine.temporal import long_term_weights, reliable, temporal_cost, warp, warped_start
from tests.conftest import pattern, stylized, tensor


def constant_flow(h: int, w: int, u: float, v: float) -> torch.Tensor:
    flow = torch.zeros(1, 2, h, w, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = u, v
    return flow


def test_warping_along_no_flow_is_the_identity_and_along_a_whole_pixel_shift_a_shift():
    image = torch.rand(2, 3, 12, 16, dtype=torch.float64)
    assert torch.allclose(warp(image, constant_flow(12, 16, 0, 0).expand(2, -1, -1, -1)), image)
    # backward flow -2 in x: frame t shows at x what frame t-1 showed at x - 2 (a pan to the right)
    shifted = warp(image, constant_flow(12, 16, -2, 0).expand(2, -1, -1, -1))
    assert torch.allclose(shifted[..., 2:], image[..., :-2])
    down = warp(image, constant_flow(12, 16, 0, 1.5).expand(2, -1, -1, -1))  # half pixels interpolate
    assert torch.allclose(down[..., :10, :], (image[..., 1:11, :] + image[..., 2:12, :]) / 2)


def test_consistent_flows_are_reliable_except_where_the_point_came_from_outside():
    backward, forward = constant_flow(10, 12, -2, 0), constant_flow(10, 12, 2, 0)
    c = reliable(backward, forward)
    assert c.shape == (1, 1, 10, 12)
    assert torch.equal(c[..., :2], torch.zeros(1, 1, 10, 2))  # came into view from the left
    assert torch.equal(c[..., 2:], torch.ones(1, 1, 10, 10))


def test_flows_that_disagree_mark_the_point_occluded():
    backward = constant_flow(10, 12, -3, 0)
    forward = constant_flow(10, 12, 2, 0)  # the round trip misses by 1 px: 1 > 0.01 * 13 + 0.5
    assert reliable(backward, forward)[..., 3:].sum() == 0
    near = constant_flow(10, 12, 2.5, 0)  # misses by 0.5 px: 0.25 < 0.01 * 15.25 + 0.5
    assert reliable(backward, near)[..., 3:].min() == 1


def test_soft_masks_grow_each_occlusion_and_blur_the_edges_as_artistic_videos_does():
    """temporal_mask soft: an occluded point counts -0.75 before a Gaussian of sigma 0.8, so the
    trusted pixels beside an occlusion fall further than a blur of the hard mask puts them (the
    occlusion grows), the occlusion itself stays 0, a point come from outside is 0 without
    growing, and far from both the mask is 1; all in [0, 1]."""
    from nstbatch.engine.temporal import gaussian

    backward, forward = constant_flow(20, 24, -3, 0), constant_flow(20, 24, 3, 0)  # a pan, no boundary
    forward[:, 0, 6:14, 9:15] = 0  # where these points went, the flows disagree: occluded
    hard, soft = reliable(backward, forward), reliable(backward, forward, soft=True)
    occluded = (hard[0, 0] == 0)
    occluded[:, :3] = False  # the left edge came into view
    rows, cols = occluded.nonzero().unbind(1)
    assert occluded.sum() > 20 and soft[0, 0][occluded].max() < 0.05
    ring = (slice(int(rows.min()) - 1, int(rows.min())), slice(int(cols.min()), int(cols.max()) + 1))
    assert hard[0, 0][ring].min() == 1  # trusted by the hard check...
    assert (soft[0, 0][ring] < gaussian(hard, 0.8)[0, 0][ring] - 0.1).all()  # ...grown over in soft
    assert soft[0, 0, :, :2].max() < 0.1 and soft[0, 0, 0:2, 6:].min() == pytest.approx(1)
    assert soft.min() >= 0 and soft.max() <= 1


def test_a_motion_boundary_is_unreliable():
    backward = constant_flow(10, 12, 0, 0)
    backward[:, 0, :, 6:] = -1  # the right half moves, the left does not
    forward = -backward
    c = reliable(backward, forward)[0, 0]
    assert c[:, 5:7].sum() == 0 and c[:, :4].min() == 1 and c[:, 8:].min() == 1


def test_long_term_weights_count_where_no_closer_frame_is_reliable():
    c1 = torch.tensor([1.0, 0.0, 0.0, 0.5])
    c2 = torch.tensor([1.0, 1.0, 0.0, 1.0])
    c4 = torch.tensor([1.0, 1.0, 1.0, 1.0])
    w1, w2, w4 = long_term_weights([c1, c2, c4])
    assert w1.tolist() == [1.0, 0.0, 0.0, 0.5]
    assert w2.tolist() == [0.0, 1.0, 0.0, 0.5]
    assert w4.tolist() == [0.0, 0.0, 1.0, 0.0]


def test_the_temporal_cost_is_the_weighted_mean_square_over_three_h_w():
    image = torch.zeros(2, 3, 4, 5)
    warped = torch.zeros(2, 3, 4, 5)
    warped[1, :, 0, 0] = 0.5  # one pixel, three channels, off by 0.5
    weights = torch.ones(2, 1, 4, 5)
    assert temporal_cost(image, warped, weights).tolist() == pytest.approx([0.0, 3 * 0.25 / 60])
    weights[1, 0, 0, 0] = 0  # where the flow is not trusted, nothing is asked
    assert temporal_cost(image, warped, weights).tolist() == [0.0, 0.0]


def test_a_frame_starts_from_the_warped_output_and_from_its_content_where_new():
    content, warped = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    weights = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    start = warped_start(content, warped, weights)
    assert start[0, :, 0, 1].tolist() == [0.0, 0.0, 0.0] and start[0, :, 1, 1].tolist() == [1.0, 1.0, 1.0]


def test_dis_flow_of_a_pan_warps_the_previous_frame_onto_this_one():
    cv2 = pytest.importorskip("cv2")
    wide = pattern(96, 64, phase=1)
    before, after = wide[:, 4:84], wide[:, 1:81]  # the camera pans left: the scene moves 3 px right
    gray = [np.ascontiguousarray(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)) for f in (before, after)]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    backward = torch.from_numpy(dis.calc(gray[1], gray[0], None)).permute(2, 0, 1)[None].double()
    forward = torch.from_numpy(dis.calc(gray[0], gray[1], None)).permute(2, 0, 1)[None].double()
    c = reliable(backward, forward)
    assert c[..., 8:-8, 8:-8].mean() > 0.9 and c[..., :, :2].max() == 0
    warped = warp(tensor(before).double(), backward)
    error = temporal_cost(tensor(after).double(), warped, c)
    assert error < 0.1 * temporal_cost(tensor(after).double(), tensor(before).double(), torch.ones_like(c))


def test_a_frame_tied_to_an_earlier_output_goes_towards_it_where_trusted_and_is_free_elsewhere():
    from nstbatch.config import resolve_params
    from nstbatch.engine.optimize import initial_image
    from nstbatch.engine.vgg import build_features

    params = resolve_params("balanced", {"style_layers": "relu1_1,relu2_1", "content_layers": "relu2_2",
                                         "steps": 12, "scales": "1", "precision": "fp32", "seed": 3,
                                         "init": "content+noise"})
    features = build_features(params)
    content, style = tensor(pattern(40, 32)), tensor(pattern(32, 32, phase=2.0)).flip(1)
    free = stylized(content, style, params, features=features).image
    earlier = torch.full_like(content, 0.5)
    trusted = torch.zeros(1, 1, 32, 40)
    trusted[..., :, :20] = 1  # the left half: the flow is trusted there
    start = initial_image(content, params)
    assert torch.equal(stylized(content, style, params, features=features, init=start).image, free)
    untrusted = stylized(content, style, params, features=features,
                         init=start, ties=((earlier, torch.zeros_like(trusted)),)).image
    assert torch.equal(untrusted, free)  # no trust, no pull (and a tie changes nothing else)
    tied = stylized(content, style, dataclasses.replace(params, temporal_weight=1e4), features=features,
                    init=start, ties=((earlier, trusted),)).image
    left, right = (slice(None), slice(None), slice(None), slice(0, 20)), (slice(None),) * 3 + (slice(20, None),)
    assert (tied[left] - 0.5).abs().mean() < 0.3 * (free[left] - 0.5).abs().mean()
    assert (tied[right] - 0.5).abs().mean() > 2 * (tied[left] - 0.5).abs().mean()  # untrusted: not pulled


def test_a_frame_s_links_come_nearest_first_whatever_order_temporal_frames_gives():
    """``temporal_frames: 4,2,1`` ties as ``1,2,4`` does: the warped start from t−1, a farther
    frame where no nearer one is trusted (issue 49: the order written once decided it)."""
    pytest.importorskip("cv2")
    from nstbatch.engine.flow import estimator, links

    flow = estimator("dis-medium")
    wide = pattern(120, 64, phase=1)
    frames = {t: flow.prepare(np.ascontiguousarray(wide[:, 12 - 3 * t:92 - 3 * t])) for t in range(5)}
    written = links(frames, 4, (4, 2, 1), flow)
    assert [link.distance for link in written] == [1, 2, 4]
    for a, b in zip(written, links(frames, 4, (1, 2, 4), flow)):
        assert torch.equal(a.backward, b.backward) and torch.equal(a.weights, b.weights)
