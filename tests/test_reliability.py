"""Reliability (issue 8): hostile images and manifests, faults of the environment, and
confinement. Each case ends in a correct output or a one-line error for that job alone, the
other jobs done, and an exit code that tells the two apart; no Python traceback."""
import hashlib
import io
import json
import os
import resource
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nstbatch.engine import criterion
from nstbatch.cli import main
from nstbatch.io.images import probe_image
from nstbatch.errors import InputError
from tests.conftest import CSV_HEADER, cli_process, pattern, report_lines, spawn, wait_for


def row(job_id, content, style, output, size=32, steps=3, seed=0):
    return f'{job_id},"{content}","{style}",{output},{size},{steps},relu2_2,"relu1_1,relu2_1",{seed}\n'


def reports(state: Path):
    return report_lines(None, state=state, started=False)  # finished attempts


def bomb_png(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))


@pytest.fixture
def hostile(tmp_path):
    """One folder of every odd input the issue lists."""
    d = tmp_path
    Image.fromarray(pattern(48, 40), "RGB").save(d / "ok.png")
    Image.fromarray(pattern(40, 40, phase=4)[:, ::-1].copy(), "RGB").save(d / "style.png")
    jpeg = io.BytesIO()
    Image.fromarray(pattern(200, 160), "RGB").save(jpeg, "JPEG")
    (d / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 3])
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not a picture\n")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(d / "one_pixel.png")
    bomb_png(d / "bomb.png", 100_000, 100_000)
    Image.fromarray(pattern(48, 40), "RGB").convert("CMYK").save(d / "cmyk.jpg", "JPEG")
    Image.fromarray((np.asarray(Image.fromarray(pattern(48, 40)).convert("L"), np.uint16) * 257)
                    .astype(np.uint16)).save(d / "sixteen.png")
    palette = Image.fromarray(pattern(48, 40), "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(d / "palette.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: shown 90° clockwise, so 40 wide and 48 high
    Image.fromarray(pattern(48, 40), "RGB").save(d / "rotated.jpg", "JPEG", exif=exif)
    frames = [Image.fromarray(pattern(48, 40, phase=p), "RGB") for p in (0, 2)]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.fromarray(pattern(40, 40, phase=1), "RGB").convert("L").save(d / "gray_style.png")
    odd = d / "dossier été" / "ça va.png"
    odd.parent.mkdir()
    Image.fromarray(pattern(48, 40, phase=3), "RGB").save(odd)
    return d


@pytest.mark.slow
def test_a_run_over_every_odd_image_does_the_good_ones_and_names_the_bad(hostile):
    good = {"cmyk": "cmyk.jpg", "sixteen": "sixteen.png", "palette": "palette.png", "rotated": "rotated.jpg",
            "animated": "animated.gif", "one_pixel": "one_pixel.png", "odd_path": "dossier été/ça va.png"}
    bad = {"truncated": "truncated.jpg", "empty": "empty.jpg", "text": "text.jpg", "bomb": "bomb.png"}
    rows = [row(k, v, "style.png", f"out/{k}.png") for k, v in {**good, **bad}.items()]
    rows.append(row("gray_style", "ok.png", "gray_style.png", "out/gray_style.png"))
    (hostile / "m.csv").write_text(CSV_HEADER + "".join(rows))
    result = cli_process("run", hostile / "m.csv", "--skip-invalid", "--targets", "torch", "-q")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for job in list(good) + ["gray_style"]:
        with Image.open(hostile / "out" / f"{job}.png") as im:
            im.load()
            expected = (27, 32) if job == "rotated" else (32, 32) if job == "one_pixel" else (32, 27)
            assert im.size == expected and im.mode == "RGB", (job, im.size)
    lines = result.stderr.splitlines()
    for job, name in bad.items():
        assert not (hostile / "out" / f"{job}.png").exists()
        mentions = [l for l in lines if name in l]
        assert mentions, (job, result.stderr)
    assert any("empty (0 bytes)" in l for l in lines)
    assert any("not an image" in l and "text.jpg" in l for l in lines)
    assert any("decompression bomb" in l and "NSTBATCH_MAX_PIXELS" in l for l in lines)
    lines = reports(hostile / ".nstbatch" / "m.csv")
    failed = [l for l in lines if l["status"] == "failed"]
    assert [l["id"] for l in failed] == ["truncated"] and "cannot decode" in failed[0]["error"]
    assert sorted(l["id"] for l in lines if l["status"] == "invalid") == ["bomb", "empty", "text"]
    assert all("\n" not in l["error"] for l in lines if l["error"])
    assert not list((hostile / "out").glob("*.tmp*")) and not list((hostile / "out").glob(".*"))


def test_the_pixel_limit_is_a_setting(tmp_path, monkeypatch):
    Image.fromarray(pattern(100, 80), "RGB").save(tmp_path / "a.png")
    assert probe_image(tmp_path / "a.png").width == 100
    monkeypatch.setenv("NSTBATCH_MAX_PIXELS", "5000")
    with pytest.raises(InputError, match="8000 .*over the limit|over the limit of 0.005"):
        probe_image(tmp_path / "a.png")
    bomb_png(tmp_path / "bomb.png", 50_000, 50_000)
    monkeypatch.setenv("NSTBATCH_MAX_PIXELS", str(50_000 * 50_000))
    assert probe_image(tmp_path / "bomb.png").width == 50_000  # allowed by the header check


def test_an_alias_bomb_is_refused_and_plain_aliases_work(tmp_path, capsys):
    Image.fromarray(pattern(48, 40), "RGB").save(tmp_path / "c.png")
    lines = ["x: &a [s, s, s, s, s, s, s, s, s]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}x: &{name} [" + ", ".join(f"*{prev}" for _ in range(9)) + "]")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\ndefaults: {size: *i}\njobs: []\n")
    assert main(["validate", str(tmp_path / "bomb.yaml")]) == 2  # refused before anything expands it
    assert "alias bomb" in capsys.readouterr().err
    (tmp_path / "ok.yaml").write_text(
        "defaults: &d {size: 64, steps: 2}\njobs:\n"
        "  - &job {content: c.png, style: c.png, output: a.png}\n"
        "  - {<<: *job, output: b.png}\n")
    assert main(["validate", str(tmp_path / "ok.yaml")]) == 0
    assert "2 job(s), 2 ready; 0 problem(s)" in capsys.readouterr().out


def _faulty_costs(monkeypatch, rule):
    """The cost as the engine computes it, made non-finite (or out of memory) where ``rule``
    says: a stand-in for a numerically broken job that real inputs rarely produce on demand."""
    real = criterion.costs

    def costs(features, image, targets, params, *precision):
        parts = real(features, image, targets, params, *precision)
        fault = rule(params)
        if fault == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")
        if fault == "nan":
            return (parts[0] * float("nan"),) + tuple(parts[1:])
        return parts

    monkeypatch.setattr(criterion, "costs", costs)


def test_a_nan_job_is_retried_with_a_lower_lr_then_fails_alone(tmp_path, capsys, monkeypatch):
    Image.fromarray(pattern(48, 40), "RGB").save(tmp_path / "c.png")
    (tmp_path / "m.csv").write_text(CSV_HEADER + row("fine", "c.png", "c.png", "o/fine.png", seed=1)
                                    + row("recovers", "c.png", "c.png", "o/recovers.png", seed=2)
                                    + row("hopeless", "c.png", "c.png", "o/hopeless.png", seed=3)
                                    + row("oom", "c.png", "c.png", "o/oom.png", seed=4))
    _faulty_costs(monkeypatch, lambda p: {2: "nan" if p.lr > 0.01 else None, 3: "nan", 4: "oom"}.get(p.seed))
    # In this process: the monkeypatched engine does not reach worker processes.
    assert main(["run", str(tmp_path / "m.csv"), "--targets", "torch", "--in-process"]) == 1
    out, err = capsys.readouterr()
    assert "done 2, already done 0, failed 2" in out
    lines = {l["id"]: l for l in reports(tmp_path / ".nstbatch" / "m.csv")}
    assert lines["fine"]["status"] == "done" and "note" not in lines["fine"]
    assert lines["recovers"]["status"] == "done" and "retried with lr 0.005" in lines["recovers"]["note"]
    assert "retried with lr 0.005" in err
    assert lines["hopeless"]["status"] == "failed"
    assert "also after a retry with lr 0.005" in lines["hopeless"]["error"]
    assert lines["oom"]["status"] == "failed" and lines["oom"]["error"].startswith("out of memory")
    assert "smaller size" in lines["oom"]["error"]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["fine.png", "recovers.png"]
    with Image.open(tmp_path / "o" / "recovers.png") as im:
        assert json.loads(im.text["nstbatch:params"])["lr"] == pytest.approx(0.005)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_a_full_disk_fails_the_job_that_does_not_fit_and_no_half_file_stays(tmp_path):
    Image.fromarray(pattern(200, 160), "RGB").save(tmp_path / "c.png")
    (tmp_path / "m.csv").write_text(CSV_HEADER + row("small", "c.png", "c.png", "o/small.png")
                                    + row("big", "c.png", "c.png", "o/big.png", size=200)
                                    + row("small2", "c.png", "c.png", "o/small2.png", seed=5))

    def limit():  # at most 40 kB per file: the big output's PNG does not fit, nor the target cache
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    result = cli_process("run", tmp_path / "m.csv", "--targets", "torch", env={"NSTBATCH_CACHE": str(tmp_path / "cache")},
                 preexec_fn=limit)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["small.png", "small2.png"]
    failed = [l for l in reports(tmp_path / ".nstbatch" / "m.csv") if l["status"] == "failed"]
    assert [l["id"] for l in failed] == ["big"] and "File too large" in failed[0]["error"]
    assert "could not cache the style target" in result.stderr


@pytest.mark.slow
def test_an_output_folder_that_turns_read_only_mid_run_fails_the_rest_alone(tmp_path):
    """As a user: the folder loses its write permission. As root (who ignores permissions):
    the outputs live on a small tmpfs that is remounted read-only."""
    out = tmp_path / "out"
    out.mkdir()
    if os.geteuid() != 0:
        _read_only_mid_run(tmp_path, lambda busy: out.chmod(0o555), lambda: out.chmod(0o755))
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(out)], capture_output=True).returncode:
        pytest.skip("root here cannot mount a tmpfs to make read-only")
    try:
        def remount(busy):
            for _ in range(20):
                if not subprocess.run(["mount", "-o", "remount,ro", str(out)], capture_output=True).returncode:
                    return
                busy()  # an output's temp file is open: let its write end, then again
            raise AssertionError("could not remount the outputs' tmpfs read-only")

        _read_only_mid_run(tmp_path, remount, lambda: None)
    finally:
        subprocess.run(["umount", str(out)], capture_output=True)


def _read_only_mid_run(folder: Path, make_read_only, undo):
    """Once j0's output exists (observed), the run and its worker are stopped (SIGSTOP) while
    the folder is made read-only, so the other three meet it whatever the machine's speed."""
    Image.fromarray(pattern(48, 40), "RGB").save(folder / "c.png")
    (folder / "m.csv").write_text(CSV_HEADER + "".join(row(f"j{i}", "c.png", "c.png", f"out/j{i}.png", steps=200, seed=i)
                                                   for i in range(4)))
    out = folder / "out"
    proc = spawn("run", folder / "m.csv", "--targets", "torch", env={"NSTBATCH_CACHE": str(folder / "cache")},
                 start_new_session=True, text=True)
    wait_for(lambda: (out / "j0.png").exists(), proc)
    os.killpg(proc.pid, signal.SIGSTOP)

    def busy():
        os.killpg(proc.pid, signal.SIGCONT)
        wait_for(lambda: not list(out.glob(".*.tmp")), proc)
        os.killpg(proc.pid, signal.SIGSTOP)

    try:
        make_read_only(busy)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=600)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    undo()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = reports(folder / ".nstbatch" / "m.csv")
    done = [l["id"] for l in lines if l["status"] == "done"]
    failed = [l for l in lines if l["status"] == "failed"]
    assert "j0" in done and failed and len(done) + len(failed) == 4
    assert all(("Read-only file system" in l["error"] or "Permission denied" in l["error"])
               and "\n" not in l["error"] for l in failed), failed
    assert sorted(p.name for p in (folder / "out").iterdir()) == sorted(f"{j}.png" for j in done)


@pytest.mark.slow
def test_a_state_directory_on_another_filesystem(tmp_path, capsys):
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem (/dev/shm) here")
    import tempfile

    state = Path(tempfile.mkdtemp(dir=shm)) / "state"
    try:
        Image.fromarray(pattern(48, 40), "RGB").save(tmp_path / "c.png")
        (tmp_path / "m.csv").write_text(CSV_HEADER + row("a", "c.png", "c.png", "o/a.png")
                                        + row("b", "c.png", "c.png", "o/b.png", seed=1))
        argv = ["run", str(tmp_path / "m.csv"), "--state-dir", str(state), "--targets", "torch",
                "--checkpoint-every", "1", "-q"]
        assert main(argv) == 0
        assert main(argv) == 0
        assert "done 0, already done 2" in capsys.readouterr().out
        assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "b.png"]
        assert sorted(p.name for p in (state / "done").iterdir()) == ["a.json", "b.json"]
    finally:
        import shutil

        shutil.rmtree(state.parent, ignore_errors=True)


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: its content hash (files) or 'dir'."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


@pytest.mark.slow
def test_a_run_writes_only_its_outputs_its_state_and_the_cache(tmp_path):
    inputs, work, home, tmp = (tmp_path / n for n in ("inputs", "work", "home", "tmp"))
    for d in (inputs, work, home, tmp):
        d.mkdir()
    Image.fromarray(pattern(48, 40), "RGB").save(inputs / "c.png")
    Image.fromarray(pattern(40, 40, phase=2), "RGB").save(inputs / "s.png")
    (work / "m.csv").write_text(CSV_HEADER + row("a", "../inputs/c.png", "../inputs/s.png", "out/a.png")
                                + row("b", "../inputs/s.png", "../inputs/c.png", "out/b.jpg", seed=1))
    for path in inputs.iterdir():
        path.chmod(0o444)
    inputs.chmod(0o555)
    before = _tree(tmp_path)
    env = {"HOME": str(home), "TMPDIR": str(tmp), "XDG_CACHE_HOME": "", "NSTBATCH_CACHE": ""}
    result = cli_process("run", "m.csv", cwd=work, env=env)
    inputs.chmod(0o755)
    assert result.returncode == 0, result.stderr
    after = _tree(tmp_path)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    allowed = ("work/out", "work/.nstbatch", "home/.cache/nstbatch", "home/.cache")
    strays = sorted(p for p in changed if not any(p == a or p.startswith(a + os.sep) for a in allowed))
    assert not strays, strays
    assert {"work/out/a.png", "work/out/b.jpg"} <= changed
    assert any(p.startswith("home/.cache/nstbatch/onnx/") for p in changed)  # the ONNX model, cached
    assert all(before[p] == after[p] for p in before if p.startswith("inputs"))
