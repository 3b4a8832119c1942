"""A clip job (jobs/clip.py): frames in order, tied by the flow, resumable by frame."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from nstbatch.config import resolve_params
from nstbatch.engine.optimize import build_features, style_targets_of
from nstbatch.engine.temporal import reliable, warp
from nstbatch.engine.flow import dis_flow, gray
from nstbatch.io.video import probe_clip
from nstbatch.jobs.clip import FrameStore, clip_size, encode_clip, stylize_clip
from nstbatch.jobs.single import Hooks, Preempted
from tests.conftest import draw_clip, pan_frames, pattern, tensor

pytest.importorskip("av")
pytest.importorskip("cv2")

TINY = {"size": 40, "style_layers": "relu1_1,relu2_1", "content_layers": "relu2_2", "precision": "fp32", "scales": "1",
        "steps": 8, "frame_steps": 4, "temporal_weight": 200, "init": "content+noise"}


@pytest.fixture(scope="module")
def setup():
    params = resolve_params("balanced", TINY)
    features = build_features(params)
    style = tensor(pattern(32, 32, phase=2.0)).flip(1)
    return params, features, style_targets_of(features, style, params, 40, tensor(pattern(40, 32)))


def frames_folder(tmp_path, frames):
    folder = tmp_path / "clip"
    folder.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:04d}.png")
    return folder


def test_a_clip_resumes_by_frame_and_ends_as_an_uninterrupted_run(tmp_path, setup):
    params, features, targets = setup
    info = probe_clip(frames_folder(tmp_path, pan_frames(5, 40, 32)))
    size = clip_size(info, params, tmp_path / "out")
    whole = FrameStore(tmp_path / "whole")
    done, _ = stylize_clip(info, targets, params, whole, size, features=features)
    assert (done.stylized, done.shots) == (5, [0])
    stopped = FrameStore(tmp_path / "stopped")
    calls = []

    def stop() -> bool:  # a stop signal in the middle of the third frame
        calls.append(1)
        return len(calls) == params.steps + params.frame_steps + 2
    with pytest.raises(Preempted):
        stylize_clip(info, targets, params, stopped, size, features=features, hooks=Hooks(should_stop=stop))
    assert sorted(p.name for p in stopped.folder.iterdir()) == ["000001.png", "000002.png"]
    before = {p.name: p.stat().st_mtime_ns for p in stopped.folder.iterdir()}
    again, _ = stylize_clip(info, targets, params, stopped, size, features=features)
    assert again.stylized == 3
    assert {p.name: p.stat().st_mtime_ns for p in stopped.folder.iterdir() if p.name in before} == before
    for index in range(5):
        assert np.array_equal(stopped.load(index), whole.load(index)), index


def test_the_ties_steady_the_clip_and_a_cut_starts_a_new_shot(tmp_path, setup):
    params, features, targets = setup
    frames = pan_frames(4, 40, 32)
    frames.insert(2, pattern(40, 32, phase=4.0)[::-1].copy())  # a cut: another scene
    info = probe_clip(frames_folder(tmp_path, frames))
    size = clip_size(info, params, tmp_path / "out")
    tied, free = FrameStore(tmp_path / "tied"), FrameStore(tmp_path / "free")
    done, _ = stylize_clip(info, targets, params, tied, size, features=features)
    assert done.shots == [0, 2, 3]  # the cut, and the frame after it (back to the pan) again
    stylize_clip(info, targets, resolve_params("balanced", {**TINY, "temporal_weight": 0, "frame_steps": 0}), free,
                 size, features=features)

    def warping_error(store, t):  # frame t against the output before it, warped along the flow
        back, forward = (dis_flow(gray(frames[a]), gray(frames[b])) for a, b in ((t, t - 1), (t - 1, t)))
        c = reliable(back, forward)
        earlier = warp(tensor(store.load(t - 1)), back)
        return float((c * (tensor(store.load(t)) - earlier) ** 2).sum() / c.sum())
    assert warping_error(tied, 1) < 0.5 * warping_error(free, 1)
    assert warping_error(tied, 4) < 0.5 * warping_error(free, 4)


def test_a_clip_in_a_video_file_comes_out_as_one_with_its_audio(tmp_path, setup):
    import av

    params, features, targets = setup
    draw_clip(tmp_path / "in.mp4", pan_frames(4, 64, 48), audio=True)
    info = probe_clip(tmp_path / "in.mp4")
    output = tmp_path / "out.mp4"
    params = dataclasses.replace(params, size=41)
    size = clip_size(info, params, output)
    assert size == (30, 40)  # 41x31 fitted, made even for yuv420p
    store = FrameStore(tmp_path / "frames")
    _, pts = stylize_clip(info, targets, params, store, size, features=features)
    encode_clip(info, store, output, size, pts)
    out = probe_clip(output)
    assert (out.frames, out.width, out.height, out.audio) == (4, 40, 30, True)
    with av.open(str(tmp_path / "in.mp4")) as a, av.open(str(output)) as b:
        assert ([bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
                == [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size])
