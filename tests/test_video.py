"""Clips in and out (io/video.py): PyAV files and folders of frames, with their faults."""
import numpy as np
import pytest
from PIL import Image

from nstbatch.errors import InputError
from nstbatch.io.video import ClipWriter, probe_clip, read_frames
from tests.conftest import draw_clip, pan_frames

av = pytest.importorskip("av")


def audio_packets(path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def test_a_clip_is_read_and_written_back_with_its_timestamps_and_its_audio_bytes(tmp_path):
    frames = pan_frames(6, 64, 48)
    draw_clip(tmp_path / "in.mp4", frames, audio=True)
    info = probe_clip(tmp_path / "in.mp4")
    assert (info.frames, info.width, info.height, info.rate, info.audio) == (6, 64, 48, 10, True)
    read = list(read_frames(info))
    assert [f.index for f in read] == list(range(6)) and read[0].rgb.shape == (48, 64, 3)
    assert np.abs(read[3].rgb.astype(int) - frames[3]).mean() < 6  # H.264 at its default quality
    writer = ClipWriter(tmp_path / "out.mp4", info, 64, 48)
    for frame in read:
        writer.write(255 - frame.rgb, frame.pts)
    assert not (tmp_path / "out.mp4").exists()  # nothing in place until it is whole
    writer.close()
    out = probe_clip(tmp_path / "out.mp4")
    assert (out.frames, out.rate, out.audio) == (6, 10, True)
    assert [f.pts for f in read_frames(out)] == [f.pts for f in read]
    assert audio_packets(tmp_path / "out.mp4") == audio_packets(tmp_path / "in.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]  # no temp left


def test_a_rotated_clip_is_read_upright(tmp_path):
    draw_clip(tmp_path / "phone.mp4", pan_frames(3, 64, 48), rotation=90)
    info = probe_clip(tmp_path / "phone.mp4")
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    assert next(read_frames(info)).rgb.shape == (64, 48, 3)


def test_a_folder_of_frames_is_a_clip_in_name_order(tmp_path):
    for index, frame in enumerate(pan_frames(4, 40, 30)):
        Image.fromarray(frame).save(tmp_path / f"f{index:03d}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    info = probe_clip(tmp_path)
    assert (info.frames, info.width, info.height, info.folder, info.rate) == (4, 40, 30, True, None)
    assert [f.index for f in read_frames(info, start=2)] == [2, 3]
    Image.new("RGB", (20, 20)).save(tmp_path / "f999.png")
    with pytest.raises(InputError, match="f999.png: frame 5 is 20x20, the clip's first is 40x30"):
        list(read_frames(probe_clip(tmp_path)))


def test_faulty_clips_are_input_errors_that_name_them(tmp_path):
    draw_clip(tmp_path / "good.mp4", pan_frames(8, 64, 48))
    whole = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.mp4").write_text("hello")
    with av.open(str(tmp_path / "sound.m4a"), "w") as out:  # audio, no video
        stream = out.add_stream("aac", rate=8000)
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="flt", layout="mono")
        tone.sample_rate = 8000
        for packet in [*stream.encode(tone), *stream.encode()]:
            out.mux(packet)
    cases = {"cut.mp4": "cut.mp4", "empty": "a folder without frames", "text.mp4": "not a readable video",
             "sound.m4a": "no video stream", "missing.mp4": "no such clip"}
    for name, message in cases.items():
        with pytest.raises(InputError, match=message):
            info = probe_clip(tmp_path / name)
            list(read_frames(info))
    with pytest.raises(InputError, match="odd side"):
        ClipWriter(tmp_path / "odd.mp4", probe_clip(tmp_path / "good.mp4"), 63, 48)
    with pytest.raises(InputError, match="cannot write video as .gif"):
        ClipWriter(tmp_path / "x.gif", probe_clip(tmp_path / "good.mp4"), 64, 48)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "empty", "good.mp4", "sound.m4a", "text.mp4"]


def test_audio_the_output_cannot_hold_is_refused_before_any_frame_is_made(tmp_path, capsys):
    """AAC does not go into .webm: ``validate`` says so with the containers that take it, and
    ``stylize`` refuses before a frame is made (issue 49: it died with a traceback at the end,
    every frame made, its frames left among the outputs). A .mkv takes it."""
    from nstbatch.io.video import check_clip_audio
    from tests.conftest import pattern, run_cli

    draw_clip(tmp_path / "pan.mp4", pan_frames(3, 32, 24), audio=True)
    Image.fromarray(pattern(32, 32, phase=2.0)).save(tmp_path / "painting.png")
    (tmp_path / "m.yaml").write_text("jobs:\n  - {video: pan.mp4, style: painting.png, output: out/pan.webm}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "out/pan.webm: a .webm file cannot hold the aac audio of pan.mp4" in err
    assert "write .mp4 or .m4v or .mov or .mkv instead" in err
    code, _, err = run_cli(capsys, "stylize", tmp_path / "pan.mp4", tmp_path / "painting.png", "-o",
                           tmp_path / "out" / "pan.webm", "--size", "32", "--steps", "1")
    assert code == 2 and "cannot hold the aac audio" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    check_clip_audio(probe_clip(tmp_path / "pan.mp4"), tmp_path / "pan.mkv")  # no error
