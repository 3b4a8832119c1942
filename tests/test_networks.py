"""Transform networks (issue 48): the network, its training step on the engine's criterion,
and its ONNX export. Tiny networks on images the tests draw."""
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
                         params, size=32, steps=4, batch=2, lr=5e-3, width=4, blocks=1, held_out_every=3, score_size=64)

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
    spec = TrainSpec(tuple(photos), (tmp_path / "missing.jpg",), tmp_path / "nets" / "n.onnx", params, size=32, steps=2)
    with pytest.raises(InputError, match="missing.jpg"):
        train_network(spec, tmp_path / "state", features=features)
    assert not (tmp_path / "state").exists() and not (tmp_path / "nets").exists()
