"""One picture per job whichever door it comes through: ``nstbatch stylize``, the Python API
with Pillow images, and ``nstbatch run`` take the same content, the same style targets (at the
same size, from the same backend) and the same loop. The loop is chaotic in the pixels (a style
target off by one part in 10^7 moves a 20-step picture by ~2.6/255 on average and up to 64/255:
Adam's steps are about lr whatever the gradient's size), so two paths that are merely close give
visibly different pictures: this test asks for equality up to a batch's float rounding."""
import numpy as np
import pytest
from PIL import Image

import nstbatch
from nstbatch.config import resolve_params
from tests.conftest import pattern, pixels, run_cli

# (id, preset, extra columns, styles): the default (two scales, palette start, averaging,
# style_cap), resize: short (the output's long side is not size), a blend, and fast (L-BFGS).
JOBS = [("plain", "balanced", {}, ["s0.png"]),
        ("short", "balanced", {"resize": "short"}, ["s0.png"]),
        ("blend", "balanced", {}, ["s0.png", "s1.png"]),
        ("fast", "fast", {}, ["s1.png"])]
SIZE, STEPS = 64, 10


@pytest.fixture
def inputs(tmp_path):
    Image.fromarray(pattern(90, 60), "RGB").save(tmp_path / "c.png")  # 3:2, so resize short differs
    for k in range(2):
        Image.fromarray(pattern(70, 50, phase=3 + k)[:, ::-1].copy(), "RGB").save(tmp_path / f"s{k}.png")
    return tmp_path


def assert_same_picture(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert a.shape == b.shape, what
    differ = np.abs(a - b)
    # a batch of several images may round differently from one alone (docs/runs.md: batches)
    assert differ.max() <= 1 and (differ > 0).mean() < 0.01, f"{what}: max {differ.max()}, mean {differ.mean():.3f}"


def test_stylize_the_python_api_and_run_give_one_picture_per_job(inputs, capsys):
    rows = []
    for job_id, preset, extra, styles in JOBS:
        weights = ["1"] * len(styles)
        row = {"id": job_id, "content": "c.png", "style": "|".join(styles), "style_weights": "|".join(weights),
               "output": f"run/{job_id}.png", "size": SIZE, "steps": STEPS, "preset": preset, **extra}
        rows.append(row)
        flags = [f"--{key.replace('_', '-')}={value}" for key, value in extra.items()]
        code, _, err = run_cli(capsys, "stylize", inputs / "c.png", *(inputs / s for s in styles),
                               "-o", inputs / "cli" / f"{job_id}.png", "--size", SIZE, "--steps", STEPS,
                               "--preset", preset, "--device", "cpu", "-q", *flags)
        assert code == 0, err
        params = resolve_params(preset, {"size": SIZE, "steps": STEPS, **extra})
        content = Image.open(inputs / "c.png")
        blend = [(Image.open(inputs / s), 1.0) for s in styles]
        nstbatch.stylize(content, blend if len(blend) > 1 else blend[0][0], params,
                         device="cpu").save(inputs / f"api-{job_id}.png")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    (inputs / "m.csv").write_text(",".join(columns) + "\n" + "".join(
        ",".join(str(row.get(key, "")) for key in columns) + "\n" for row in rows))
    code, out, err = run_cli(capsys, "run", inputs / "m.csv", "--devices", "cpu", "-q")
    assert code == 0, out + err
    for job_id, *_ in JOBS:
        ran = pixels(inputs / "run" / f"{job_id}.png")
        assert_same_picture(pixels(inputs / "cli" / f"{job_id}.png"), ran, f"{job_id}: stylize vs run")
        assert_same_picture(pixels(inputs / f"api-{job_id}.png"), ran, f"{job_id}: Python API vs run")
    assert pixels(inputs / "run" / "short.png").shape[:2] == (SIZE, SIZE * 3 // 2)  # the short side is size
