"""Transform networks (issue 48): the network, its training step on the engine's criterion,
and its ONNX export. Tiny networks on images the tests draw."""
import dataclasses
import os

import numpy as np
import pytest
import torch

from nstbatch.config import resolve_params
from nstbatch.engine.transform import Shape, TransformNet, stylize, training_step
from nstbatch.engine.vgg import build_features
from tests.conftest import pattern, style_target, tensor

TINY = Shape(styles=1, width=4, blocks=1)
LAYERS = {"style_layers": "relu1_1,relu2_1,relu3_1", "content_layers": "relu2_2", "precision": "fp32"}


@pytest.fixture(scope="module")
def setup():
    params = resolve_params("balanced", LAYERS)
    return params, build_features(params)


def photos(count: int, side: int = 32) -> torch.Tensor:
    """``count`` different drawn photos ``(count, 3, side, side)``."""
    return torch.cat([tensor(pattern(side, side, phase=0.7 * i)) for i in range(count)])


def test_the_network_keeps_any_size_and_paints_each_image_with_its_own_row():
    torch.manual_seed(0)
    net = TransformNet(Shape(styles=3, width=4, blocks=1)).eval()
    with torch.no_grad():
        for row in net.modules():  # rows that differ, as training leaves them
            if hasattr(row, "scale"):
                row.scale.normal_(1.0, 0.5)
                row.shift.normal_(0.0, 0.5)
    images = torch.rand(2, 3, 45, 71, generator=torch.Generator().manual_seed(1))  # an odd, non-square size
    out = stylize(net, images, torch.tensor([0, 2]))
    assert out.shape == images.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    alone = stylize(net, images[1:], torch.tensor([2]))  # instance norm: an image is its own batch
    torch.testing.assert_close(out[1:], alone, rtol=1e-5, atol=1e-5)
    other = stylize(net, images[1:], torch.tensor([1]))
    assert float((other - alone).abs().mean()) > 1e-3  # another row, another painting


def test_training_with_the_engine_s_criterion_lowers_it_on_photos_it_has_not_seen(setup):
    params, features = setup
    torch.manual_seed(0)
    style = tensor(pattern(48, 48, phase=2.0)).flip(1)
    train, held_out = photos(4), photos(6)[4:]
    target = style_target(style, params, train)
    net = TransformNet(TINY)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)

    def held_out_cost() -> float:
        from nstbatch.engine.criterion import Criterion, job_targets

        with torch.no_grad():
            criterion = Criterion(features, job_targets(features, held_out, target, params), params)
            return float(criterion(net(held_out))[0].mean())

    before = held_out_cost()
    costs = [training_step(net, optimizer, features, params, train, target) for _ in range(40)]
    assert costs[-1].total < 0.7 * costs[0].total and costs[-1].style < 0.5 * costs[0].style  # the training images
    assert held_out_cost() < 0.6 * before  # and two it never saw
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in features.parameters())  # VGG stays as it is


def test_a_painting_added_by_training_its_row_only_leaves_the_first_as_it_was(setup):
    """Dumoulin et al. 2017: a network trained on one painting learns a second by training only
    the second's rows of conditional instance norm; the first painting's pictures stay equal."""
    from nstbatch.engine.criterion import Criterion, job_targets

    params, features = setup
    torch.manual_seed(0)
    red_stripes, blue_lines = torch.zeros(1, 3, 48, 48), torch.zeros(1, 3, 48, 48)
    red_stripes[:, 0, :, ::5] = 1.0
    blue_lines[:, 2, ::7, :] = 0.8
    train = photos(4)
    targets = [style_target(p, params, train) for p in (red_stripes, blue_lines)]
    net = TransformNet(Shape(styles=2, width=4, blocks=1))

    def rows(row: int) -> torch.Tensor:
        return torch.full((4,), row)

    def style_cost(row: int, painting: int) -> float:
        with torch.no_grad():
            criterion = Criterion(features, job_targets(features, train, targets[painting], params), params)
            return float(criterion(net(train, rows(row)))[2].mean())

    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(40):
        training_step(net, optimizer, features, params, train, targets[0], rows(0))
    first = stylize(net, train, rows(0))
    optimizer = torch.optim.Adam(net.rows(), lr=2e-2)
    for _ in range(40):
        training_step(net, optimizer, features, params, train, targets[1], rows(1))
    assert torch.equal(stylize(net, train, rows(0)), first)
    assert style_cost(1, 1) < 0.7 * style_cost(0, 1)  # the new row paints the new painting
    assert style_cost(0, 0) < 0.9 * style_cost(1, 0)  # ...and the first row still the first


@pytest.mark.parametrize("styles", [1, 3])
def test_the_onnx_network_runs_at_two_sizes_and_batches_within_1e_3_of_torch(tmp_path, styles):
    from nstbatch.styles.networks import NetworkSession, export_network

    torch.manual_seed(0)
    net = TransformNet(Shape(styles=styles, width=4, blocks=1))
    error = export_network(net, tmp_path / "nets" / "tiny.onnx")
    assert error < 1e-3
    session = NetworkSession.open(tmp_path / "nets" / "tiny.onnx", "cpu")
    assert session.provider == "CPUExecutionProvider" and session.styles == min(styles, 2)
    for batch, height, width in ((1, 40, 56), (4, 33, 90)):  # sizes and batches the export never saw
        images = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(batch))
        rows = torch.arange(batch) % styles
        expected = stylize(net, images, rows).numpy()
        got = session(images.numpy(), rows.numpy())
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-3
    assert [p.name for p in (tmp_path / "nets").iterdir()] == ["tiny.onnx"]  # no temp file left


def test_a_training_stopped_and_resumed_in_a_new_process_ends_at_the_same_weights(setup):
    """Saved as a file would hold it (torch.save, read back with weights_only), the training
    goes on from the same crops and paintings to weights equal to an unbroken run's."""
    import io

    from nstbatch.engine.transform import Training

    params, features = setup
    photos_ = [tensor(pattern(40 + 6 * i, 36, phase=0.7 * i)) for i in range(3)] + [tensor(pattern(20, 24))]
    paintings = [tensor(pattern(48, 48, phase=2.0)).flip(1), tensor(pattern(40, 40, phase=4.0))]
    targets = [style_target(p, params, photos_[0][..., :32, :32]) for p in paintings]

    def training() -> Training:
        torch.manual_seed(0)  # the network's initial weights
        return Training(TransformNet(Shape(styles=2, width=4, blocks=1)), features, params, targets, size=32,
                        batch=2, lr=5e-3, seed=7)

    unbroken = training()
    for _ in range(5):
        unbroken(photos_)
    first = training()
    for _ in range(2):
        first(photos_)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    del first
    resumed = training()
    resumed.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    for _ in range(3):
        resumed(photos_)
    assert resumed.step == 5
    for (name, a), b in zip(unbroken.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), name


def test_random_crops_take_every_photo_at_the_size_asked_and_scale_up_small_ones():
    from nstbatch.engine.transform import random_crops

    small, large = torch.rand(1, 3, 10, 16), torch.rand(1, 3, 64, 80)
    crops = random_crops([small, large], 24, 16, torch.Generator().manual_seed(0))
    assert crops.shape == (24, 3, 16, 16) and 0 <= float(crops.min()) and float(crops.max()) <= 1
    again = random_crops([small, large], 24, 16, torch.Generator().manual_seed(0))
    assert torch.equal(crops, again)  # one generator decides every draw
    with pytest.raises(ValueError, match="2 painting"):
        from nstbatch.engine.transform import Training

        Training(TransformNet(TINY), None, resolve_params("balanced"), [None, None])


def draw_photos(folder, count: int) -> list:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"p{i}.png"
        Image.fromarray(pattern(40 + 4 * i, 36, phase=0.7 * i)).save(path)
        paths.append(path)
    return paths


def test_a_training_from_files_stops_resumes_and_writes_the_network_with_its_card(tmp_path, setup):
    """As ``nstbatch train`` will call it: a broken photo left out by name, a stop after two
    steps with its checkpoint, the next call resuming to the weights an unbroken training
    reaches, and the ONNX model with its card (paintings by digest, held-out photos, the
    held-out yardstick) written at the end."""
    import json

    from PIL import Image

    from nstbatch.fs import sha256_of
    from nstbatch.jobs.train import TrainSpec, train_network
    from nstbatch.styles.networks import NetworkSession

    params, features = setup
    photos = draw_photos(tmp_path / "photos", 5)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    painting = tmp_path / "painting.png"
    Image.fromarray(pattern(48, 48, phase=2.0)[::-1].copy()).save(painting)

    def spec(name: str) -> TrainSpec:
        return TrainSpec((*photos, tmp_path / "photos" / "broken.jpg"), (painting,), tmp_path / "nets" / f"{name}.onnx",
                         params, size=32, steps=4, batch=2, lr=5e-3, width=4, blocks=1, held_out_every=3, score_size=64,
                         side=64)

    said, stops = [], iter([False, False, True])
    stopped = train_network(spec("resumed"), tmp_path / "state", features=features, notice=said.append,
                            should_stop=lambda: next(stops))
    assert stopped.card is None and stopped.step == 2 and not (tmp_path / "nets" / "resumed.onnx").exists()
    assert any("broken.jpg" in line for line in said)
    assert len(list((tmp_path / "state" / "train").glob("resumed-*.pt"))) == 1
    done = train_network(spec("resumed"), tmp_path / "state", features=features, notice=said.append,
                         command="nstbatch train m.yaml")
    assert done.step == 4 and any("resuming resumed.onnx's training at step 2" in line for line in said)
    assert not list((tmp_path / "state" / "train").glob("*.pt"))  # done: the checkpoint goes
    unbroken = train_network(spec("unbroken"), tmp_path / "other", features=features)
    image = np.random.default_rng(0).random((1, 3, 36, 44), dtype=np.float32)
    assert np.array_equal(NetworkSession.open(done.network, "cpu")(image),
                          NetworkSession.open(unbroken.network, "cpu")(image))
    card = json.loads((tmp_path / "nets" / "resumed.json").read_text())
    assert card["styles"] == [{"path": str(painting), "sha256": sha256_of(painting), "row": 0}]
    assert card["photos"]["training"] == 4 and card["photos"]["held_out"] == [str(photos[2])]
    assert "broken.jpg" in card["photos"]["left_out"][0] and card["command"] == "nstbatch train m.yaml"
    final = card["held_out_yardstick"][-1]
    assert final["step"] == 4 and 0 <= final["style"] and 0 <= final["content"]


def test_a_painting_that_cannot_be_read_stops_the_training_before_any_work(tmp_path, setup):
    from nstbatch.errors import InputError
    from nstbatch.jobs.train import TrainSpec, train_network

    params, features = setup
    photos = draw_photos(tmp_path / "photos", 2)
    spec = TrainSpec(tuple(photos), (tmp_path / "missing.jpg",), tmp_path / "nets" / "n.onnx", params, size=32, steps=2,
                     side=64)
    with pytest.raises(InputError, match="missing.jpg"):
        train_network(spec, tmp_path / "state", features=features)
    assert not (tmp_path / "state").exists() and not (tmp_path / "nets").exists()


def test_stylize_with_a_trained_network_is_one_pass_of_it_and_names_its_paintings(tmp_path, setup, capsys):
    """``nstbatch stylize PHOTO PAINTING -o OUT --network NET`` as a user runs it after a
    training: the output is the network's pass over the photo at the output's size, in 8 bits;
    a pool network's painting chosen by file or by name, and refused (with the names it
    paints) when unsaid or unknown; a network without its card refused."""
    from PIL import Image

    from nstbatch.jobs.single import load_content
    from nstbatch.jobs.train import TrainSpec, train_network
    from nstbatch.styles.networks import NetworkSession
    from tests.conftest import run_cli

    params, features = setup
    photos = draw_photos(tmp_path / "photos", 2)
    paintings = []
    for name, phase in (("waves", 2.0), ("swirls", 3.5)):
        paintings.append(tmp_path / f"{name}.png")
        Image.fromarray(pattern(48, 48, phase=phase)[::-1].copy()).save(paintings[-1])
    network = tmp_path / "nets" / "pool.onnx"
    train_network(TrainSpec(tuple(photos), tuple(paintings), network, params, size=32, steps=2, batch=2, width=4,
                            blocks=1, score_size=48, side=48), tmp_path / "state", features=features)
    photo = tmp_path / "photo.png"
    Image.fromarray(pattern(50, 38, phase=1.1)).save(photo)
    session = NetworkSession.open(network, "cpu")
    pixels = load_content(photo, resolve_params("balanced", {"size": "40"})).numpy()

    for chosen, row in ((paintings[1], 1), ("waves", 0)):
        out = tmp_path / f"out-{row}.png"
        code, said, err = run_cli(capsys, "stylize", photo, chosen, "-o", out, "--network", network, "--size", "40",
                                  "--providers", "cpu")
        assert code == 0, err
        assert f"wrote {out} (network pool.onnx on CPUExecutionProvider)" in said
        expected = np.clip(session(pixels, np.array([row], np.int64))[0].transpose(1, 2, 0) * 255 + 0.5, 0, 255)
        written = np.asarray(Image.open(out), dtype=np.float64)
        assert written.shape == (30, 40, 3) and np.abs(written - expected.astype(np.uint8)).max() <= 1

    code, _, err = run_cli(capsys, "stylize", photo, "-o", tmp_path / "x.png", "--network", network)
    assert code == 2 and "paints 2 paintings; say which" in err and "waves, swirls" in err
    code, _, err = run_cli(capsys, "stylize", photo, "monet", "-o", tmp_path / "x.png", "--network", network)
    assert code == 2 and "monet: neither a file nor a painting of the network pool" in err
    code, _, err = run_cli(capsys, "stylize", photo, photo, "-o", tmp_path / "x.png", "--network", network)
    assert code == 2 and "was not trained on this painting" in err
    network.with_suffix(".json").unlink()
    code, _, err = run_cli(capsys, "stylize", photo, "waves", "-o", tmp_path / "x.png", "--network", network)
    assert code == 2 and "the network's card is missing" in err
    assert not (tmp_path / "x.png").exists()


def test_train_then_run_a_manifest_whose_entry_names_a_network(tmp_path, capsys):
    """The user's path: ``run`` before ``train`` refuses the entry with the fix; ``train``
    writes the network and its card (a broken photo left out by name); ``run`` makes every
    output in one pass of it, equal to the network's pass over the photo, and records them
    done; ``train`` again keeps the network; a network trained anew reruns the outputs."""
    import json

    from PIL import Image

    from nstbatch.jobs.single import load_content
    from nstbatch.styles.networks import NetworkSession
    from tests.conftest import report_lines, run_cli

    draw_photos(tmp_path / "photos", 4)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "paintings").mkdir()
    for name, phase in (("waves", 2.0), ("swirls", 3.5)):
        Image.fromarray(pattern(48, 48, phase=phase)[::-1].copy()).save(tmp_path / "paintings" / f"{name}.png")
    manifest = tmp_path / "m.yaml"

    def write(steps: int) -> None:
        manifest.write_text(
            "defaults: {style_layers: 'relu1_1,relu2_1,relu3_1', content_layers: relu2_2, precision: fp32, size: 40}\n"
            "jobs:\n"
            "  - dataset: photos/\n    style_pool: paintings/\n    assign: each\n    network: nets/pool.onnx\n"
            f"    train_size: 32\n    train_steps: {steps}\n    train_batch: 2\n"
            "    output: 'out/{content_stem}-{style_stem}.png'\n")

    write(3)
    code, _, err = run_cli(capsys, "run", manifest)
    assert code == 2 and f"nets/pool.onnx: no such network (train it first: nstbatch train {manifest})" in err
    assert not (tmp_path / "out").exists()

    code, out, err = run_cli(capsys, "train", manifest)
    assert code == 0, err
    assert "left out of the training" in err and "broken.jpg" in err and "step 3/3" in err
    assert f"wrote {tmp_path / 'nets' / 'pool.onnx'} and its card pool.json" in out
    card = json.loads((tmp_path / "nets" / "pool.json").read_text())
    assert [s["path"] for s in card["styles"]] == [str(tmp_path / "paintings" / n) for n in ("swirls.png", "waves.png")]
    assert card["training"]["steps"] == 3 and card["command"] == ""
    assert card["training"]["side"] == 40  # trained at the scale the run paints at: the manifest's size

    code, out, err = run_cli(capsys, "run", manifest, "--skip-invalid")  # the broken photo: its jobs invalid
    assert code == 1 and "done 8, already done 0, failed 0, invalid 2" in out
    session = NetworkSession.open(tmp_path / "nets" / "pool.onnx", "cpu")
    params = resolve_params("balanced", {"size": "40"})
    for row, painting in enumerate(("swirls", "waves")):
        pixels = load_content(tmp_path / "photos" / "p1.png", params).numpy()
        expected = np.clip(session(pixels, np.array([row], np.int64))[0].transpose(1, 2, 0) * 255 + 0.5, 0, 255)
        written = np.asarray(Image.open(tmp_path / "out" / f"p1-{painting}.png"), dtype=np.float64)
        assert np.abs(written - expected.astype(np.uint8)).max() <= 1
    done = [line for line in report_lines(tmp_path, manifest="m.yaml") if line["status"] == "done"]
    assert len(done) == 8 and all(line["note"].startswith("network pool.onnx on CPU") for line in done)

    code, out, err = run_cli(capsys, "train", manifest)
    assert code == 0 and "kept" in out and "already trained" in out
    code, out, _ = run_cli(capsys, "run", manifest, "--skip-invalid")
    assert "done 0, already done 8" in out
    write(4)  # another training: another network, so every output is made again
    code, out, err = run_cli(capsys, "train", manifest)
    assert code == 0 and "wrote" in out
    code, out, _ = run_cli(capsys, "run", manifest, "--skip-invalid")
    assert "done 8, already done 0" in out


def test_refine_steps_start_the_optimiser_from_the_network_s_picture(tmp_path, capsys):
    """``refine_steps: N``: ``run`` makes each output by N steps of the entry's optimisation at
    the full size, started from the network's picture: the very picture ``stylize_job`` makes
    from that start, not the network's own; its metadata names the network; another N remakes
    the outputs."""
    from PIL import Image

    from nstbatch.io.images import read_provenance
    from nstbatch.io.manifest import read_manifest
    from nstbatch.jobs.single import load_content, stylize_job
    from nstbatch.styles.networks import Networks
    from tests.conftest import run_cli

    draw_photos(tmp_path / "photos", 3)
    (tmp_path / "paintings").mkdir()
    Image.fromarray(pattern(48, 48, phase=2.0)[::-1].copy()).save(tmp_path / "paintings" / "waves.png")
    manifest = tmp_path / "m.yaml"

    def write(refine: int) -> None:
        manifest.write_text(
            "defaults: {style_layers: 'relu1_1,relu2_1,relu3_1', content_layers: relu2_2, precision: fp32, size: 40}\n"
            "jobs:\n"
            "  - dataset: photos/\n    style_pool: paintings/\n    network: nets/waves.onnx\n"
            f"    train_size: 32\n    train_steps: 2\n    train_batch: 2\n    refine_steps: {refine}\n"
            "    output: 'out/{content_stem}.png'\n")

    write(3)
    assert run_cli(capsys, "train", manifest)[0] == 0
    code, out, err = run_cli(capsys, "run", manifest)
    assert code == 0 and "done 3, already done 0" in out, err
    job = next(job for job in read_manifest(manifest).jobs if job.content.name == "p1.png")
    assert job.refine_steps == 3 and job.params.steps == 3 and job.params.scales == (1.0,)
    start = Networks("cpu")(job.network, load_content(job.content, job.params), [job.styles[0][0]])
    expected = stylize_job(job.content, job.styles, job.params, device="cpu", init=start).image
    written = np.asarray(Image.open(job.output), dtype=np.int16)
    as_made = (expected[0].permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
    network_only = (start[0].permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
    assert np.abs(written - as_made).max() <= 1 and np.abs(written - network_only).max() > 8
    assert read_provenance(job.output)["network"]["name"] == "waves.onnx"

    write(5)
    code, out, _ = run_cli(capsys, "run", manifest)
    assert code == 0 and "done 3, already done 0" in out


def test_run_batch_puts_images_of_one_size_through_the_network_together_whatever_their_painting(tmp_path, capsys):
    """``run --batch 4`` on a pool network's tree at ``crop: center`` (one size): the network's
    passes hold four and two images of both paintings, each output as the network makes it
    alone."""
    from PIL import Image

    from nstbatch.io.manifest import read_manifest
    from nstbatch.jobs.single import load_content
    from nstbatch.styles.networks import Networks
    from tests.conftest import report_lines, run_cli

    draw_photos(tmp_path / "photos", 3)
    (tmp_path / "paintings").mkdir()
    for name, phase in (("waves", 2.0), ("swirls", 3.5)):
        Image.fromarray(pattern(48, 48, phase=phase)[::-1].copy()).save(tmp_path / "paintings" / f"{name}.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "defaults: {style_layers: 'relu1_1,relu2_1,relu3_1', content_layers: relu2_2, precision: fp32, size: 40,"
        " crop: center}\n"
        "jobs:\n"
        "  - {dataset: photos/, style_pool: paintings/, assign: each, network: nets/pool.onnx, train_size: 32,"
        " train_steps: 2, train_batch: 2, output: 'out/{content_stem}-{style_stem}.png'}\n")
    assert run_cli(capsys, "train", manifest)[0] == 0
    code, out, err = run_cli(capsys, "run", manifest, "--batch", "4")
    assert code == 0 and "done 6, already done 0" in out, err
    done = [line for line in report_lines(tmp_path, manifest="m.yaml") if line["status"] == "done"]
    assert sorted(line.get("batch") for line in done) == [2, 2, 4, 4, 4, 4]
    networks = Networks("cpu")
    for job in read_manifest(manifest).jobs:
        alone = networks(job.network, load_content(job.content, job.params), [job.styles[0][0]])
        expected = (alone[0].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(np.asarray(Image.open(job.output), dtype=np.float64) - expected).max() <= 1


def test_a_temporal_weight_trains_pairs_of_moved_noisy_frames_into_outputs_that_agree(setup):
    """Huang et al. 2017 at training time: under ``temporal_weight`` each crop has a twin (moved
    a few pixels, with sensor noise) tied to its output warped into it, so the trained network
    paints two neighbouring frames alike where one trained on stills alone does not; the style
    is still learned."""
    from dataclasses import replace

    from nstbatch.engine import transform
    from nstbatch.engine.transform import Training, _tie_twins, twin_crops

    params, features = setup
    train = [tensor(pattern(56, 48, phase=0.7 * i)) for i in range(4)]
    held = [tensor(pattern(60, 52, phase=0.7 * i + 0.35)) for i in range(3)]
    target = style_target(tensor(pattern(48, 48, phase=2.0)).flip(1), params, train[0][..., :32, :32])
    pairs, moves = twin_crops(held, 6, 32, torch.Generator().manual_seed(3))
    assert moves.abs().max() <= 2 and moves.abs().sum() > 0
    warped, weights = _tie_twins(pairs, moves)  # each crop moved onto its twin: the twin, up to its noise
    noise = ((pairs - warped)[6:] * weights[6:]).square().sum() / (3 * weights[6:].sum())
    assert 0.5 * transform.TWIN_NOISE < float(noise.sqrt()) < 1.5 * transform.TWIN_NOISE

    def disagreement(net) -> float:
        """The mean squared difference of each twin's output and its crop's warped into it."""
        with torch.no_grad():
            out = stylize(net, pairs)
            warped, weights = _tie_twins(out, moves)
            assert float(weights[6:].mean()) > 0.7 and float(weights[:6].max()) == 0
            return float((weights * (out - warped) ** 2).sum() / weights.sum())

    def trained(weight: float):
        torch.manual_seed(0)
        training = Training(TransformNet(TINY), features, replace(params, temporal_weight=weight), [target],
                            size=32, batch=4, lr=5e-3, seed=1)
        costs = [training(train) for _ in range(30)]
        return training.net, costs

    tied, tied_costs = trained(2000.0)
    apart, _ = trained(0.0)
    assert sum(c.style for c in tied_costs[-5:]) / 5 < 0.6 * tied_costs[0].style  # it still learns the painting
    assert disagreement(tied) < 0.5 * disagreement(apart)


def test_a_pool_network_scores_each_held_out_output_against_the_painting_its_row_paints(tmp_path, setup):
    """A pool of four paintings: the card's held-out yardstick has each painting's own figures
    (every held-out photo through that painting's row, scored against that painting), and the
    pool's figure is their mean."""
    import json

    from PIL import Image

    from nstbatch.engine.pixels import to_tensor
    from nstbatch.engine.yardstick import Yardstick
    from nstbatch.io.images import load_image
    from nstbatch.jobs.train import TrainSpec, train_network

    params, features = setup
    photos = draw_photos(tmp_path / "photos", 4)
    paintings = []
    for i in range(4):
        paintings.append(tmp_path / f"painting{i}.png")
        Image.fromarray(pattern(40 + 8 * i, 48, phase=1.5 * i + 2.0)[::-1].copy()).save(paintings[-1])
    spec = TrainSpec(tuple(photos), tuple(paintings), tmp_path / "nets" / "pool.onnx", params, size=32, steps=2,
                     batch=4, lr=5e-3, width=4, blocks=1, held_out_every=4, score_size=64, side=64)
    result = train_network(spec, tmp_path / "state", features=features)
    final = json.loads(result.card.read_text())["held_out_yardstick"][-1]
    assert len(final["paintings"]) == 4
    assert final["style"] == pytest.approx(sum(p["style"] for p in final["paintings"]) / 4, abs=1e-4)
    from nstbatch.styles.networks import NetworkSession

    session = NetworkSession.open(result.network, "cpu")
    photo = to_tensor(load_image(photos[3]))  # the one held out
    for row in (1, 3):
        image = torch.from_numpy(session(photo.numpy(), np.array([row])))
        score = Yardstick(photo, to_tensor(load_image(paintings[row])), 64)(image)
        assert final["paintings"][row]["style"] == pytest.approx(score.style, abs=2e-3)
        assert final["paintings"][row]["content"] == pytest.approx(score.content, abs=2e-3)
    assert len({p["style"] for p in final["paintings"]}) == 4  # four paintings, four figures


def test_a_clip_goes_through_a_network_frame_by_frame_resumes_and_stylize_takes_the_same_path(tmp_path, setup,
                                                                                            capsys):
    """A ``video:`` entry naming ``network:``: every frame is the network's one pass over it (no
    flow), the output a clip with the input's frame count (a folder of PNG frames equal to the
    network's pictures); a run stopped between passes keeps its frames and the next paints
    only the rest, ending equal to an unbroken run; a blend for a network and a missing
    network are the manifest's problems; ``stylize --network`` on a clip takes the same path."""
    pytest.importorskip("av")
    from PIL import Image

    from nstbatch.engine.pixels import to_tensor
    from nstbatch.io.manifest import read_manifest
    from nstbatch.io.video import probe_clip, read_frames
    from nstbatch.jobs.clip import FramesKept, NetworkFrames, network_clip_job
    from nstbatch.jobs.frames import FrameStore
    from nstbatch.jobs.train import TrainSpec, train_network
    from nstbatch.styles.networks import NetworkSession
    from tests.conftest import draw_clip, pan_frames, run_cli

    params, features = setup
    painting = tmp_path / "waves.png"
    Image.fromarray(pattern(48, 48, phase=2.0)[::-1].copy()).save(painting)
    network = tmp_path / "nets" / "n.onnx"
    train_network(TrainSpec(tuple(draw_photos(tmp_path / "photos", 2)), (painting,), network, params, size=32,
                            steps=2, batch=2, width=4, blocks=1, score_size=48, side=48), tmp_path / "state",
                  features=features)
    frames = pan_frames(5, 40, 30)
    draw_clip(tmp_path / "pan.mp4", frames, audio=True)
    (tmp_path / "m.yaml").write_text(
        "defaults: {size: 40}\njobs:\n"
        "  - {video: pan.mp4, style: waves.png, network: nets/n.onnx, output: out/pan.mp4}\n"
        "  - {video: pan.mp4, style: waves.png, network: nets/n.onnx, output: out/frames}\n"
        "  - {video: pan.mp4, style: {waves.png: 1, photos/p0.png: 1}, network: nets/n.onnx, output: out/b.mp4}\n"
        "  - {video: pan.mp4, style: waves.png, network: nets/none.onnx, output: out/none.mp4}\n")
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert code == 1 and "done 2, already done 0, failed 0, invalid 2" in out, err
    assert "a network paints one painting at a time" in err and "nets/none.onnx: no such network" in err
    assert "5 frame(s) through network n.onnx on CPUExecutionProvider" in err
    video = probe_clip(tmp_path / "out" / "pan.mp4")
    assert (video.frames, video.width, video.height, video.audio) == (5, 40, 30, True)
    session = NetworkSession.open(network, "cpu")
    for index, frame in enumerate(read_frames(probe_clip(tmp_path / "pan.mp4"))):  # the frames as decoded
        expected = np.clip(session(to_tensor(Image.fromarray(frame.rgb)).numpy())[0].transpose(1, 2, 0) * 255, 0, 255)
        written = np.asarray(Image.open(tmp_path / "out" / "frames" / f"{index + 1:06d}.png"), dtype=np.float64)
        assert np.abs(written - expected).max() <= 1, index  # the network's pass, rounded to 8 bits

    job = read_manifest(tmp_path / "m.yaml").jobs[1]
    paint = NetworkFrames(lambda images: torch.from_numpy(session(images.numpy())), batch=2,
                          should_stop=iter([False, True]).__next__)
    with pytest.raises(FramesKept, match="stopped after 2 frame"):
        network_clip_job(job, FrameStore(tmp_path / "kept"), paint)
    painted = []
    paint = NetworkFrames(paint.paint, batch=2, on_frame=lambda index, count: painted.append(index))
    job = dataclasses.replace(job, output=tmp_path / "resumed")
    assert network_clip_job(job, FrameStore(tmp_path / "kept"), paint)[1] == 3 and painted == [2, 3, 4]
    for name in (f"{index:06d}.png" for index in range(1, 6)):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "resumed" / name)),
                              np.asarray(Image.open(tmp_path / "out" / "frames" / name)))

    code, said, err = run_cli(capsys, "stylize", tmp_path / "pan.mp4", "-o", tmp_path / "s" / "pan.mov",
                              "--network", network, "--size", "40", "--codec", "prores")
    assert code == 0 and "5 frames through network n.onnx on CPUExecutionProvider, 5 painted" in said, err
    assert probe_clip(tmp_path / "s" / "pan.mov").frames == 5 and os.listdir(tmp_path / "s") == ["pan.mov"]
