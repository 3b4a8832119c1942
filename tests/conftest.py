import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nstbatch.environment import lift_pillow_limit

ROOT = Path(__file__).resolve().parent.parent  # the repository: its manifests/, benchmarks/, export/

# Tests never reach for the network: the torchvision source must fail fast, not try a download.
os.environ["NSTBATCH_OFFLINE"] = "1"
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# The test process is an entry point, as the CLI is: nstbatch's own pixel limit decides.
lift_pillow_limit()


def pattern(width: int, height: int, phase: float = 0.0) -> np.ndarray:
    """A deterministic, smooth-but-busy RGB test image as uint8 (H, W, 3)."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    r = 0.5 + 0.5 * np.sin(9 * x + phase)
    g = 0.5 + 0.5 * np.cos(7 * y - 2 * x + phase)
    b = 0.5 + 0.5 * np.sin(13 * (x * y) + 3 * y + phase)
    return (np.stack([r, g, b], -1) * 255).round().astype(np.uint8)


# The columns of most small run manifests: shallow layers so that tiny images run fast.
CSV_HEADER = "id,content,style,output,size,steps,content_layers,style_layers,seed\n"


def tensor(array) -> torch.Tensor:
    """An (H, W, 3) array of 0-255 values as a float ``(1, 3, H, W)`` tensor in [0, 1]."""
    return torch.from_numpy(np.array(array, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0) / 255


def pixels(path) -> np.ndarray:
    """An image file's RGB pixels as int16 (H, W, 3): differences do not wrap around."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


_STORES = {}  # device -> the tests' StyleTargetStore there


def style_target(style, params, content):
    """The style's targets as every door makes them (``styles.store.StyleTargetStore``: PyTorch
    here, the session's cache) for an output the size of ``content``: of a tensor ``(1, 3, h,
    w)`` or a blend ``[(tensor, weight), ...]``, in ``content``'s dtype; a ``StyleTarget``
    comes back as it is."""
    from nstbatch.engine.targets import StyleTarget
    from nstbatch.styles.store import StyleTargetStore

    if isinstance(style, StyleTarget):
        return style
    if str(content.device) not in _STORES:
        _STORES[str(content.device)] = StyleTargetStore(backend="torch", device=content.device)
    blend = [(style, 1.0)] if isinstance(style, torch.Tensor) else list(style)
    target, _ = _STORES[str(content.device)].for_images(blend, params, content, max(content.shape[-2:]))
    return target.to(content.dtype)  # float64 for a float64 network's tests


def stylized(content, style, params, **options):
    """``engine.optimize`` of ``content`` towards a style given as images (``style_target``)."""
    from nstbatch.engine.optimize import optimize

    return optimize(content, style_target(style, params, content), params, **options)


def targets_of(features, content, styles, params, dtype=None):
    """A job's targets from style tensors, as the loop makes them (``criterion.job_targets`` of
    ``style_target``)."""
    from nstbatch.engine.criterion import job_targets

    return job_targets(features, content, style_target(styles, params, content), params, dtype)


@pytest.fixture
def folder(tmp_path):
    """Four contents ``c0.png`` … ``c3.png`` (40x36) and a style ``s.png`` (36x36) in a fresh
    folder: the inputs of most run tests (a module that needs others defines its own)."""
    draw_inputs(tmp_path, 4, 40, 36, 36)
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def shared_cache(tmp_path_factory):
    """One cache for the session: each ONNX model is exported once, never into ~/.cache."""
    root = tmp_path_factory.mktemp("nstbatch-cache")
    os.environ["NSTBATCH_CACHE"] = str(root)
    return root


def draw_inputs(folder, contents: int, width: int, height: int, style_side: int) -> None:
    """Contents ``c0.png`` … (each its own phase) and a mirrored style ``s.png`` in ``folder``."""
    for i in range(contents):
        Image.fromarray(pattern(width, height, phase=i), "RGB").save(folder / f"c{i}.png")
    style = pattern(style_side, style_side, phase=contents + 3)[:, ::-1].copy()
    Image.fromarray(style, "RGB").save(folder / "s.png")


@pytest.fixture
def image_pair(tmp_path):
    """A content and a style PNG of 48x40 and 40x40 pixels."""
    content = tmp_path / "content.png"
    style = tmp_path / "style.png"
    Image.fromarray(pattern(48, 40), "RGB").save(content)
    stripes = np.zeros((40, 40, 3), np.uint8)
    stripes[:, ::6] = (240, 200, 40)
    stripes[::5, :] = (30, 60, 200)
    Image.fromarray(stripes, "RGB").save(style)
    return content, style


def run_cli(capsys, *argv, in_process: bool = True) -> tuple[int, str, str]:
    """``nstbatch ARGV`` in this process: (exit code, stdout, stderr). A ``run`` runs its jobs
    here too unless ``in_process=False`` (worker processes: for the slow tests)."""
    from nstbatch.cli import main

    argv = [str(a) for a in argv]
    if in_process and argv and argv[0] == "run" and "--in-process" not in argv:
        argv.insert(1, "--in-process")
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def cli_process(*argv, env=None, cwd=None, timeout=300, **popen) -> subprocess.CompletedProcess:
    """``nstbatch ARGV`` in a process of its own, as a user runs it (text output captured)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "nstbatch", *map(str, argv)], capture_output=True,
                          text=True, env=environment, cwd=cwd, timeout=timeout, **popen)


def report_lines(folder, *, started: bool = True, manifest: str = "m.csv", state=None) -> list[dict]:
    """Every line of the run's reports (all shards), as JSON, in file order: of the state
    directory beside ``manifest`` in ``folder``, or of ``state``; ``started=False`` keeps only
    finished attempts."""
    import json

    state = Path(state) if state is not None else folder / ".nstbatch" / manifest
    lines = [json.loads(line) for path in sorted(state.glob("report*.jsonl"))
             for line in path.read_text().splitlines()]
    return [line for line in lines if started or line["status"] != "started"]


def has_started(folder, job_id: str, manifest: str = "m.csv") -> bool:
    """Whether a run in ``folder`` has reported ``job_id`` started (the report's lines are
    read as they are; one being written is not yet a line)."""
    import json

    for path in (folder / ".nstbatch" / manifest).glob("report*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("id") == job_id and record.get("status") == "started":
                return True
    return False


def wait_until_gone(group: int, timeout: float = 60) -> None:
    """Wait until no live process is left in process group ``group`` (after a ``killpg``:
    the kernel has taken them all; a zombie waiting for its reaper counts as gone)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone while we looked
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                alive = True
                break
        if not alive:
            return
        time.sleep(0.02)
    raise AssertionError(f"process group {group} still has live processes after {timeout} s")


def spawn(*argv, cwd=None, env=None, **popen) -> subprocess.Popen:
    """``nstbatch ARGV`` started as a process of its own (output piped unless ``popen`` says
    otherwise), for tests that signal, kill or race it."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([sys.executable, "-m", "nstbatch", *map(str, argv)], cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, **popen)


def spawn_run(folder, *args, manifest: str = "m.csv", **popen) -> subprocess.Popen:
    """``nstbatch run MANIFEST ARGS`` as a separate process in ``folder``."""
    return spawn("run", manifest, *args, cwd=folder, **popen)


def kill_run(folder, proc, manifest: str = "m.csv", timeout: float = 180) -> None:
    """SIGKILL a spawned run, then wait until its orphaned worker has checkpointed and let go
    of its claims, as it does on the run's death (it checkpoints before it releases them);
    fail if they are still held after ``timeout`` seconds."""
    import signal
    import time

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    claims = folder / ".nstbatch" / manifest / "claims"
    deadline = time.monotonic() + timeout
    while held := sorted(p.name for p in claims.glob("*.lock")):
        if time.monotonic() > deadline:
            raise AssertionError(f"the killed run's worker still holds {held} after {timeout:.0f} s")
        time.sleep(0.1)


def wait_for(predicate, proc, timeout: float = 120):
    """Poll ``predicate`` until it holds; fail if ``proc`` ends first or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def pan_frames(count: int, width: int, height: int, step: int = 3) -> list[np.ndarray]:
    """A camera panning over ``pattern``: frame t is a window moved ``step`` px right per frame,
    with a bright square drifting down over it (something that moves against the scene)."""
    scene = pattern(width + step * count + 8, height, phase=0.7)
    frames = []
    for t in range(count):
        frame = scene[:, step * t: step * t + width].copy()
        top = 4 + 2 * t
        frame[top:top + height // 4, width // 3: width // 3 + width // 4] = (250, 240, 40)
        frames.append(frame)
    return frames


def draw_clip(path, frames: list[np.ndarray], *, rate: int = 10, audio: bool = False, rotation: int | None = None):
    """Encode ``frames`` (RGB uint8) as an H.264 clip with PyAV; ``audio``: a mono AAC tone
    as long as the clip; ``rotation``: a display rotation in degrees (as phones record)."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=8000) if audio else None
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            seconds = np.arange(8000 * len(frames) // rate) / 8000
            tone = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)[None],
                                              format="flt", layout="mono")
            tone.sample_rate = 8000
            for packet in [*sound.encode(tone), *sound.encode()]:
                out.mux(packet)
