"""Clips in and out (io/video.py): PyAV files and folders of frames, with their faults."""
from fractions import Fraction

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
    from nstbatch.io.video import check_clip_streams
    from tests.conftest import pattern, run_cli

    draw_clip(tmp_path / "pan.mp4", pan_frames(3, 32, 24), audio=True)
    Image.fromarray(pattern(32, 32, phase=2.0)).save(tmp_path / "painting.png")
    (tmp_path / "m.yaml").write_text("jobs:\n  - {video: pan.mp4, style: painting.png, output: out/pan.webm}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "out/pan.webm: a .webm file cannot hold the aac audio of pan.mp4 (stream 1)" in err
    assert "write .mp4 or .m4v or .mov or .mkv instead, or set audio: drop" in err
    code, _, err = run_cli(capsys, "stylize", tmp_path / "pan.mp4", tmp_path / "painting.png", "-o",
                           tmp_path / "out" / "pan.webm", "--size", "32", "--steps", "1")
    assert code == 2 and "cannot hold the aac audio" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    check_clip_streams(probe_clip(tmp_path / "pan.mp4"), tmp_path / "pan.mkv")  # no error


def tagged_clip(path, frames, *, pixel_format="yuv420p", colour=(1, 1, 1, 1), rate=10, subtitles=None,
                audio=0):
    """An H.264 clip whose stream carries the colour tags ``colour`` (matrix, range, primaries,
    transfer, as FFmpeg numbers them), encoded in that matrix; ``audio`` AAC tracks (the second
    in French); ``subtitles``: an .srt file muxed in (a .mkv ``path``)."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pixel_format
        context = video.codec_context
        context.colorspace, context.color_range, context.color_primaries, context.color_trc = colour
        text = av.open(str(subtitles)) if subtitles else None
        copy = out.add_stream_from_template(text.streams.subtitles[0]) if text else None
        tracks = [out.add_stream("aac", rate=8000) for _ in range(audio)]
        if audio > 1:
            tracks[1].metadata["language"] = "fra"
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=pixel_format, dst_colorspace={6: 5}.get(colour[0], colour[0]), dst_color_range=colour[1])
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        for packet in text.demux(text.streams.subtitles[0]) if text else ():
            if packet.dts is not None:
                packet.stream = copy
                out.mux(packet)
        for track in tracks:
            tone = av.AudioFrame.from_ndarray(np.zeros((1, 800 * len(frames)), np.float32), format="flt", layout="mono")
            tone.sample_rate = 8000
            for packet in [*track.encode(tone), *track.encode()]:
                out.mux(packet)


def stream_facts(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        context = video.codec_context
        return {"codec": context.name, "pixel_format": context.pix_fmt, "tag": video.codec_tag,
                "colour": (context.colorspace, context.color_range, context.color_primaries, context.color_trc),
                "others": [(s.type, s.codec_context.name, s.metadata.get("language", "und").replace("und", "") or None)
                           for s in container.streams if s.type != "video"]}


def matrix_errors(path, frames, wrong: int) -> tuple[float, float]:
    """The mean error of ``path``'s frames against ``frames`` as read (in the matrix its tags
    name), and as read in the ``wrong`` matrix: a writer that tags one matrix and encodes in
    another has the first larger."""
    right = np.mean([np.abs(f.rgb.astype(int) - rgb).mean() for f, rgb in zip(read_frames(probe_clip(path)), frames)])
    with av.open(str(path)) as container:
        off = np.mean([np.abs(f.to_ndarray(format="rgb24", src_colorspace=wrong, src_color_range=1).astype(int)
                              - rgb).mean() for f, rgb in zip(container.decode(video=0), frames)])
    return right, off


def colourful(count, width=64, height=48):
    """Flat 16-px blocks of saturated colours, shifting a block a frame: little for a codec to
    lose, much for a matrix read as another to shift."""
    palette = np.array([[230, 20, 20], [20, 200, 40], [30, 40, 220], [230, 220, 30], [200, 30, 210],
                        [30, 210, 220], [128, 128, 128]], np.uint8)
    y, x = np.mgrid[0:height, 0:width] // 16
    return [palette[(x + 2 * y + index) % len(palette)] for index in range(count)]


@pytest.mark.parametrize("codec, pixel_format, suffix, tag", [("prores", "yuv422p10le", ".mov", "apch"),
                                                              ("hevc", "yuv420p10le", ".mp4", "hvc1")])
def test_10_bit_prores_and_hevc_read_back_with_their_pixel_format_colour_tags_and_colours(
        tmp_path, codec, pixel_format, suffix, tag):
    """An editor's formats (issue 49): the input's BT.709 tags carried, its frames converted in
    that matrix both ways (read back as written, within the codec's loss), its audio tracks kept."""
    from nstbatch.config import resolve_params

    frames = colourful(4)
    tagged_clip(tmp_path / "in.mp4", frames, colour=(1, 1, 1, 1), audio=2)
    info = probe_clip(tmp_path / "in.mp4")
    assert info.colour == (1, 1, 1, 1) and not info.deep
    params = resolve_params(None, {"codec": codec, **({"pixel_format": pixel_format} if codec == "hevc" else {})})
    writer = ClipWriter(tmp_path / f"out{suffix}", info, 64, 48, params)
    for frame in read_frames(info):
        writer.write(frame.rgb, frame.pts)
    writer.close()
    facts = stream_facts(tmp_path / f"out{suffix}")
    assert facts == {"codec": codec, "pixel_format": pixel_format, "tag": tag, "colour": (1, 1, 1, 1),
                     "others": [("audio", "aac", None), ("audio", "aac", "fra")]}
    right, as_601 = matrix_errors(tmp_path / f"out{suffix}", frames, 5)
    assert right < 0.65 * as_601, (right, as_601)  # swscale's 10-bit 4:2:0 loses more at the edges


def test_a_10_bit_clip_stays_10_bit_and_a_601_one_keeps_its_matrix(tmp_path):
    from nstbatch.config import resolve_params

    frames = colourful(3)
    tagged_clip(tmp_path / "deep.mp4", frames, pixel_format="yuv420p10le", colour=(9, 1, 9, 16))  # BT.2020 PQ
    tagged_clip(tmp_path / "sd.mp4", frames, colour=(6, 1, 6, 6))
    for name, expected in [("deep", ("yuv420p10le", (9, 1, 9, 16))), ("sd", ("yuv420p", (6, 1, 6, 6)))]:
        info = probe_clip(tmp_path / f"{name}.mp4")
        writer = ClipWriter(tmp_path / f"{name}-out.mkv", info, 64, 48, resolve_params())
        for frame in read_frames(info):
            writer.write(frame.rgb, frame.pts)
        writer.close()
        facts = stream_facts(tmp_path / f"{name}-out.mkv")
        assert (facts["pixel_format"], facts["colour"]) == expected
    right, as_709 = matrix_errors(tmp_path / "sd-out.mkv", frames, 1)
    assert right < 0.6 * as_709, (right, as_709)


def test_every_codec_the_table_puts_in_a_container_is_written_there_and_no_other(tmp_path):
    """``CODECS``' containers are what PyAV's FFmpeg takes: each pairing either writes two frames
    that read back, or is refused by ``encoding`` before any work with the suffixes that fit."""
    from nstbatch.config import VIDEO_CODECS, resolve_params
    from nstbatch.io.video import CODECS, VIDEO_OUTPUTS, encoding

    assert set(VIDEO_CODECS) - {"auto"} == set(CODECS)  # the manifest's choices are the table's codecs
    info = probe_clip(draw_clip(tmp_path / "in.mp4", pan_frames(2, 64, 48)) or tmp_path / "in.mp4")
    for codec in CODECS:
        for suffix in VIDEO_OUTPUTS:
            path, params = tmp_path / f"{codec}{suffix}", resolve_params(None, {"codec": codec})
            if VIDEO_OUTPUTS[suffix] not in CODECS[codec].containers:
                with pytest.raises(InputError, match=f"cannot hold {codec} video"):
                    encoding(path, params)
                continue
            writer = ClipWriter(path, info, 64, 48, params)
            for frame in read_frames(info):
                writer.write(frame.rgb, frame.pts)
            writer.close()
            assert probe_clip(path).frames == 2, (codec, suffix)


def test_delivery_settings_that_cannot_work_are_manifest_problems_before_any_work(tmp_path, capsys):
    from tests.conftest import pattern, run_cli

    draw_clip(tmp_path / "pan.mp4", pan_frames(3, 32, 24))
    Image.fromarray(pattern(32, 32, phase=2.0)).save(tmp_path / "painting.png")
    (tmp_path / "m.yaml").write_text(
        "jobs:\n"
        "  - {video: pan.mp4, style: painting.png, output: out/a.webm, codec: h264}\n"
        "  - {video: pan.mp4, style: painting.png, output: out/b.mov, codec: prores, crf: 20}\n"
        "  - {video: pan.mp4, style: painting.png, output: out/c.webm, pixel_format: yuv420p10le}\n"
        "  - {video: pan.mp4, style: painting.png, output: out/d.mp4, crf: 60}\n"
        "  - {video: pan.mp4, style: painting.png, output: out/e.mov, codec: prores, pixel_format: yuv444p10le}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1, err
    for message in ["a.webm: a .webm file cannot hold h264 video", "write .mp4 or .m4v or .mov or .mkv",
                    "b.mov: prores takes no crf or bitrate", "c.webm: vp9 does not take pixel_format yuv420p10le",
                    "use yuv420p, yuv422p, yuv444p", "d.mp4: crf 60 is beyond h264's 0-51"]:
        assert message in err, err
    assert "e.mov" not in err and not (tmp_path / "out").exists()


def test_every_audio_and_subtitle_track_is_copied_or_all_dropped_and_a_folder_keeps_its_rate(tmp_path):
    from nstbatch.config import resolve_params
    from nstbatch.io.video import check_clip_streams

    (tmp_path / "talk.srt").write_text("1\n00:00:00,000 --> 00:00:00,300\nhello there\n\n")
    tagged_clip(tmp_path / "in.mkv", colourful(4), subtitles=tmp_path / "talk.srt", audio=2)
    info = probe_clip(tmp_path / "in.mkv")
    for audio, others in [("copy", [("subtitle", "srt", None), ("audio", "aac", None), ("audio", "aac", "fra")]),
                          ("drop", [])]:
        writer = ClipWriter(tmp_path / f"{audio}.mkv", info, 64, 48, resolve_params(None, {"audio": audio}))
        for frame in read_frames(info):
            writer.write(frame.rgb, frame.pts)
        writer.close()
        assert stream_facts(tmp_path / f"{audio}.mkv")["others"] == others
    # subrip has no place in .mp4: refused before any work, unless dropped
    with pytest.raises(InputError, match=r"cannot hold the srt subtitle of in.mkv \(stream 1\)"):
        check_clip_streams(info, tmp_path / "out.mp4", resolve_params())
    check_clip_streams(info, tmp_path / "out.mp4", resolve_params(None, {"audio": "drop"}))
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, rgb in enumerate(colourful(3)):
        Image.fromarray(rgb).save(folder / f"shot_{index + 101}.png")
    info = probe_clip(folder)
    writer = ClipWriter(tmp_path / "ntsc.mp4", info, 64, 48, resolve_params(None, {"fps": 29.97}))
    for frame in read_frames(info):
        writer.write(frame.rgb, frame.pts)
    writer.close()
    assert probe_clip(tmp_path / "ntsc.mp4").rate == Fraction(30000, 1001)
    assert stream_facts(tmp_path / "ntsc.mp4")["colour"] == (1, 1, 1, 1)


def test_a_folder_output_is_checked_without_being_made_before_its_frames(tmp_path):
    from nstbatch.io.video import check_clip_output

    check_clip_output(tmp_path / "out" / "frames")
    assert (tmp_path / "out").is_dir() and not (tmp_path / "out" / "frames").exists()
    (tmp_path / "out" / "frames").mkdir()
    check_clip_output(tmp_path / "out" / "frames")  # an existing folder: written into
    (tmp_path / "out" / "taken").write_text("a file")
    with pytest.raises(InputError, match="is a file; a clip's frames go into a folder"):
        check_clip_output(tmp_path / "out" / "taken")


@pytest.mark.parametrize("codec, suffix", [("h264", ".mp4"), ("hevc", ".mov"), ("prores", ".mov"), ("vp9", ".webm"),
                                           ("ffv1", ".mkv")])
def test_runs_of_frames_encoded_apart_join_into_the_file_one_encoding_makes(tmp_path, codec, suffix):
    """Bounded disk (issue 49): a clip's frames encoded as they are made, a few at a time, then
    joined without encoding them again, read back as the file encoded in one go reads: every
    frame, each at its input timestamp, its pictures within the codec's loss, the audio's bytes;
    each run's disk freed as the output takes it in."""
    from nstbatch.config import resolve_params
    from nstbatch.io.video import encode_segment, join_segments

    frames = pan_frames(13, 64, 48)
    draw_clip(tmp_path / "in.mp4", frames, audio=True)
    info = probe_clip(tmp_path / "in.mp4")
    params = resolve_params(None, {"codec": codec, **({"audio": "drop"} if suffix == ".webm" else {})})
    read = list(read_frames(info))
    output, segments = tmp_path / f"out{suffix}", []
    for start in range(0, 13, 5):  # 5, 5 and 3 frames
        segments.append(tmp_path / f"segment-{start}.seg")
        encode_segment(info, ((f.rgb, f.pts) for f in read[start:start + 5]), segments[-1], output, (48, 64), params)
    freed = []
    join_segments(info, segments, output, params, 13, on_joined=lambda path: (freed.append(path), path.unlink()))
    assert freed == segments and not any(path.exists() for path in segments)
    writer = ClipWriter(tmp_path / f"whole{suffix}", info, 64, 48, params)
    for frame in read:
        writer.write(frame.rgb, frame.pts)
    writer.close()
    joined, whole = probe_clip(output), probe_clip(tmp_path / f"whole{suffix}")
    assert (joined.frames, joined.rate, joined.audio, joined.colour) == (whole.frames, whole.rate, whole.audio,
                                                                         whole.colour)
    assert [f.pts for f in read_frames(joined)] == [f.pts for f in read_frames(whole)]
    for a, b in zip(read_frames(joined), read_frames(whole)):
        assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() < 4, a.index
    if suffix != ".webm":
        assert audio_packets(output) == audio_packets(tmp_path / "in.mp4")
    with pytest.raises(InputError, match="12 frame"):  # a run missing: refused, nothing in place
        encode_segment(info, ((f.rgb, f.pts) for f in read[:12]), segments[0], output, (48, 64), params)
        join_segments(info, segments[:1], tmp_path / f"short{suffix}", params, 13)
    assert not (tmp_path / f"short{suffix}").exists()


def test_reading_from_a_later_frame_seeks_there_and_gives_the_frames_a_whole_read_gives(tmp_path):
    """A resume starts at its first missing frame (issue 49): a video is sought to the keyframe
    before it, not decoded from its first frame, and the frames from there are the same frames,
    at the same indices and timestamps, as reading it whole gives."""
    from unittest import mock

    import av

    with av.open(str(tmp_path / "long.mp4"), "w") as out:  # a keyframe every 10 frames, B-frames between
        video = out.add_stream("libx264", rate=10, options={"g": "10", "bf": "2"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for frame in pan_frames(45, 64, 48):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    info = probe_clip(tmp_path / "long.mp4")
    whole = list(read_frames(info))
    decoded = []
    original = av.container.InputContainer.decode

    def counting(self, *args, **kwargs):
        for frame in original(self, *args, **kwargs):
            decoded.append(frame.pts)
            yield frame
    with mock.patch.object(av.container.InputContainer, "decode", counting):
        later = list(read_frames(info, 33))
    assert [f.index for f in later] == list(range(33, 45)) and 12 <= len(decoded) < 20  # from the keyframe at 30
    for a, b in zip(later, whole[33:], strict=True):
        assert a.pts == b.pts and np.array_equal(a.rgb, b.rgb)
    assert list(read_frames(info, 45)) == []
