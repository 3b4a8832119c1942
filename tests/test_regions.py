"""Regions (issue 50; engine/regions.py): a painting per part of the picture, guided Grams
(Gatys et al. 2017 §4), and parts kept as photographed."""

import pytest
import torch

from nstbatch.config import resolve_params
from nstbatch.engine.criterion import Criterion, job_targets
from nstbatch.engine.optimize import optimize
from nstbatch.engine.regions import Regions, guided_moments, keep_photo
from nstbatch.engine.vgg import build_features
from tests.conftest import pattern, style_target, tensor

TINY = {"size": 48, "style_layers": "relu1_1,relu2_1,relu3_1", "content_layers": "relu2_2", "precision": "fp32",
        "scales": "1", "steps": 60}


@pytest.fixture(scope="module")
def setup():
    params = resolve_params("balanced", TINY)
    return params, build_features(params)


def stripes(vertical: bool, channel: int) -> torch.Tensor:
    """A painting of one colour's stripes (red columns, blue rows): two that no Gram confuses."""
    painting = torch.full((1, 3, 48, 48), 0.1)
    if vertical:
        painting[:, channel, :, ::6] = 0.9
    else:
        painting[:, channel, ::5, :] = 0.9
    return painting


def test_guided_moments_are_the_region_s_own_and_a_full_mask_is_the_whole_picture():
    a = torch.randn(2, 5, 6, 8)
    full = guided_moments(a, torch.ones(2, 1, 6, 8))
    unrolled = a.reshape(2, 5, 48)
    torch.testing.assert_close(full[1], unrolled @ unrolled.transpose(1, 2) / 48)
    torch.testing.assert_close(full[2], torch.ones(2))
    left = torch.zeros(2, 1, 6, 8)
    left[..., :3] = 1
    mean, second, share = guided_moments(a, left)
    part = a[..., :3].reshape(2, 5, 18)
    torch.testing.assert_close(second, part @ part.transpose(1, 2) / 18)
    torch.testing.assert_close(mean, part.mean(-1))
    torch.testing.assert_close(share, torch.full((2,), 3 / 8))


def test_two_paintings_on_two_halves_each_paint_their_own_half(setup):
    params, features = setup
    photo = tensor(pattern(48, 48, phase=0.4))
    red, blue = stripes(True, 0), stripes(False, 2)
    targets = [style_target(painting, params, photo) for painting in (red, blue)]
    left = torch.zeros(1, 1, 48, 48)
    left[..., :24] = 1
    regions = Regions.of(torch.cat([left, 1 - left], 1), targets)
    assert regions.keep is None  # every pixel is some painting's
    torch.manual_seed(0)
    image = optimize(photo, regions, params, features=features).image

    def cost(half: slice, painting: int) -> float:
        part = image[..., half]
        criterion = Criterion(features, job_targets(features, photo[..., half], targets[painting], params), params)
        return float(criterion(part)[2])

    left_half, right_half = slice(0, 24), slice(24, 48)
    assert cost(left_half, 0) < 0.5 * cost(left_half, 1)  # the left half is the red painting's
    assert cost(right_half, 1) < 0.5 * cost(right_half, 0)  # the right half the blue one's
    assert float(image[0, 0, :, :20].mean()) > float(image[0, 0, :, 28:].mean())  # red paint on the left
    assert float(image[0, 2, :, 28:].mean()) > float(image[0, 2, :, :20].mean())  # blue on the right


def test_a_kept_part_stays_the_photo_and_the_rest_is_painted(setup):
    params, features = setup
    photo = tensor(pattern(48, 48, phase=1.3))
    target = style_target(stripes(True, 0), params, photo)
    keep = torch.zeros(1, 1, 48, 48)
    keep[..., 12:36, 12:36] = 1
    regions = Regions.of(torch.ones(1, 1, 48, 48), [target], keep)
    assert float(regions.masks[..., 20, 20]) == 0 and float(regions.masks[..., 2, 2]) == 1
    torch.manual_seed(0)
    image = optimize(photo, regions, params, features=features).image
    inside = (image - photo)[..., 14:34, 14:34].abs().mean()
    outside = (image - photo)[..., :8, :].abs().mean()
    assert float(inside) < 4 / 255 and float(outside) > 10 * float(inside)
    plain = optimize(photo, target, params, features=features).image  # no keep: painted all over
    assert float((plain - photo)[..., 14:34, 14:34].abs().mean()) > 10 * float(inside)


def test_uncovered_pixels_are_kept_and_keep_photo_blends_through_a_soft_edge():
    photo, image = torch.zeros(1, 3, 120, 120), torch.ones(1, 3, 120, 120)
    half = torch.zeros(1, 1, 120, 120)
    half[..., :60] = 1
    regions = Regions.of(half, [None])  # the right half is no painting's: kept
    torch.testing.assert_close(regions.keep, 1 - half)
    out = keep_photo(image, photo, regions)
    assert float(out[..., :, :50].min()) == 1 and float(out[..., :, 70:].max()) < 1e-3  # painted; the photo
    edge = out[0, 0, 0, 54:66]
    assert bool((edge[1:] <= edge[:-1]).all()) and 0.2 < float(edge[6]) < 0.8  # a soft edge, no step
    assert 4 <= int(((edge > 0.02) & (edge < 0.98)).sum()) <= 10
    with pytest.raises(ValueError, match="2 mask"):
        Regions.of(torch.ones(1, 2, 4, 4), [None])


def test_a_manifest_paints_two_parts_with_two_paintings_and_keeps_a_third_as_photographed(tmp_path, capsys):
    """The user's path: ``masks`` (one per painting of ``style``'s list: one job) and ``keep``
    through ``run``; the outputs equal to ``stylize_job``'s with the same files (one path);
    mistakes found before any work: a mask per painting, a mask of another shape, a missing
    one, masks on a clip; a changed mask reruns the job."""
    import numpy as np
    from PIL import Image

    from nstbatch.io.manifest import RegionFiles, read_manifest
    from nstbatch.jobs.single import stylize_job
    from tests.conftest import run_cli

    Image.fromarray(pattern(64, 48, phase=0.4)).save(tmp_path / "photo.png")
    for name, painting in (("red", stripes(True, 0)), ("blue", stripes(False, 2))):
        Image.fromarray((painting[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
    left = np.zeros((96, 128), np.uint8)  # drawn at twice the photo's size: the same shape
    left[:, :64] = 255
    Image.fromarray(left).save(tmp_path / "left.png")
    Image.fromarray(255 - left).save(tmp_path / "right.png")
    keep = np.zeros((48, 64), np.uint8)
    keep[16:32, 40:56] = 255
    Image.fromarray(keep).save(tmp_path / "keep.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "square.png")
    defaults = ("defaults: {size: 64, steps: 30, scales: '1', style_layers: 'relu1_1,relu2_1,relu3_1',"
                " content_layers: relu2_2, precision: fp32}\n")
    (tmp_path / "m.yaml").write_text(defaults + "jobs:\n"
        "  - {content: photo.png, style: [red.png, blue.png], masks: [left.png, right.png], keep: keep.png,"
        " output: 'out/{content_stem}-{style_stem}.png'}\n"
        "  - {content: photo.png, style: [red.png, blue.png], masks: [left.png], output: out/one.png}\n"
        "  - {content: photo.png, style: red.png, keep: square.png, output: out/square.png}\n"
        "  - {content: photo.png, style: red.png, keep: nowhere.png, output: out/nowhere.png}\n"
        "  - {video: photo.png, labels: keep.png, regions: {255: red.png}, output: out/clip.mp4}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "m.yaml:4: masks has 1 image(s) for 2 painting(s)" in err
    assert "m.yaml:5: mask " in err and "square.png is 40x40 px, the content photo.png 64x48" in err
    assert "m.yaml:6: mask: " in err and "nowhere.png" in err
    assert "m.yaml:7: labels are for still images: give a clip masks" in err
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert code == 1 and "done 1, already done 0, failed 0, invalid 4" in out, err
    made = np.asarray(Image.open(tmp_path / "out" / "photo-regions.png"), dtype=np.float64) / 255
    job = read_manifest(tmp_path / "m.yaml").jobs[0]
    assert job.regions == RegionFiles((tmp_path / "left.png", tmp_path / "right.png"), tmp_path / "keep.png")
    torch.manual_seed(0)
    alone = stylize_job(job.content, job.styles, job.params, regions=job.regions).image
    assert np.abs(made - alone[0].permute(1, 2, 0).numpy()).mean() < 2 / 255  # one path: run's is stylize_job's
    photo = np.asarray(Image.open(tmp_path / "photo.png"), dtype=np.float64) / 255
    assert np.abs(made - photo)[18:30, 42:54].mean() < 4 / 255  # kept as photographed
    assert made[:, :24, 0].mean() > made[:, 40:, 0].mean() + 0.05 or made[:, 40:, 2].mean() > made[:, :24, 2].mean()
    code, out, _ = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert "already done 1" in out
    Image.fromarray(np.flip(left, 1).copy()).save(tmp_path / "left.png")  # another mask: the job is made again
    code, out, _ = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert "done 1, already done 0" in out


def test_stylize_takes_masks_and_keep_and_refuses_what_does_not_fit(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from tests.conftest import run_cli

    Image.fromarray(pattern(48, 40, phase=0.9)).save(tmp_path / "photo.png")
    Image.fromarray(pattern(32, 32, phase=2.5)).save(tmp_path / "a.png")
    Image.fromarray(pattern(32, 32, phase=4.0)[::-1].copy()).save(tmp_path / "b.png")
    half = np.zeros((40, 48), np.uint8)
    half[:, :24] = 255
    Image.fromarray(half).save(tmp_path / "left.png")
    Image.fromarray(255 - half).save(tmp_path / "right.png")
    Image.fromarray(np.zeros((10, 40), np.uint8)).save(tmp_path / "wide.png")
    tiny = ["--size", "48", "--steps", "4", "--scales", "1", "--style-layers", "relu1_1,relu2_1",
            "--content-layers", "relu2_2", "--precision", "fp32", "-q"]
    code, _, err = run_cli(capsys, "stylize", tmp_path / "photo.png", tmp_path / "a.png", tmp_path / "b.png",
                           "-o", tmp_path / "out.png", "--mask", tmp_path / "left.png", "--mask",
                           tmp_path / "right.png", "--keep", tmp_path / "left.png", *tiny)
    assert code == 0, err
    made = np.asarray(Image.open(tmp_path / "out.png"), dtype=np.float64)
    photo = np.asarray(Image.open(tmp_path / "photo.png"), dtype=np.float64)
    assert np.abs(made - photo)[:, :20].mean() < 3 and np.abs(made - photo)[:, 28:].mean() > 3  # left kept
    code, _, err = run_cli(capsys, "stylize", tmp_path / "photo.png", tmp_path / "a.png", tmp_path / "b.png",
                           "-o", tmp_path / "x.png", "--mask", tmp_path / "left.png", *tiny)
    assert code == 2 and "1 mask(s) for 2 painting(s)" in err
    code, _, err = run_cli(capsys, "stylize", tmp_path / "photo.png", tmp_path / "a.png", "-o", tmp_path / "x.png",
                           "--keep", tmp_path / "wide.png", *tiny)
    assert code == 2 and "wide.png is 40x10 px, the content photo.png 48x40" in err
    assert not (tmp_path / "x.png").exists()


# a dataset entry's tiny defaults
DATASET_DEFAULTS = ("defaults: {size: 48, steps: 20, scales: '1', style_layers: 'relu1_1,relu2_1',"
                    " content_layers: relu2_2, precision: fp32}\n")


def red_pool(tmp_path) -> None:
    """``paintings/``: one painting, red columns (``stripes``)."""
    import numpy as np
    from PIL import Image

    (tmp_path / "paintings").mkdir()
    Image.fromarray((stripes(True, 0)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(
        tmp_path / "paintings" / "red.png")


def photo_tree(tmp_path, photos, masks: str, value: int) -> None:
    """``photos/``: a drawn photo at each (relpath, phase); beside it ``masks/`` mirroring the
    first two, each ``value`` on a square (8-24, 8-24) and 0 elsewhere (a keep mask, or a label
    image whose person is ``value``)."""
    import numpy as np
    from PIL import Image

    for rel, phase in photos:
        (tmp_path / "photos" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pattern(48, 32, phase=phase)).save(tmp_path / "photos" / rel)
    square = np.zeros((32, 48), np.uint8)
    square[8:24, 8:24] = value
    for rel, _ in photos[:2]:
        (tmp_path / masks / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(square).save(tmp_path / masks / rel)


def test_a_dataset_tree_takes_its_masks_from_a_tree_beside_it_resumes_and_shards(tmp_path, capsys):
    """Regions at dataset scale (issue 50): each image's keep mask from a tree mirroring the
    images (``keep: "masks/{content_relpath}.png"``), validated before any work (a missing mask
    and one of another shape fail alone, naming the image and the mask), the rest run, kept
    where the mask is white; a rerun does nothing again, two shards of the tree do it all once;
    a mask tree inside the dataset folder is refused (it would be stylized)."""
    import numpy as np
    from PIL import Image

    from tests.conftest import run_cli

    photo_tree(tmp_path, (("a.png", 0.4), ("sub/b.png", 1.1), ("sub/c.png", 2.0), ("d.png", 2.7)), "masks", 255)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "masks" / "sub" / "c.png")  # d: none
    red_pool(tmp_path)
    (tmp_path / "m.yaml").write_text(
        DATASET_DEFAULTS + "jobs:\n"
        "  - {dataset: photos/, style_pool: paintings/, keep: 'masks/{content_relpath}.png',"
        " output: 'out/{content_relpath}.png'}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "(sub/c.png)" in err and "c.png is 40x40 px, the content c.png 48x32" in err
    assert "(d.png)" in err and "masks/d.png" in err and "(a.png)" not in err
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid", "--shard", "0/2")
    code, out2, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid", "--shard", "1/2")
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")) == [
        "a.png", "sub/b.png"]
    for rel in ("a", "sub/b"):
        made = np.asarray(Image.open(tmp_path / "out" / f"{rel}.png"), dtype=np.float64)
        photo = np.asarray(Image.open(tmp_path / "photos" / f"{rel}.png"), dtype=np.float64)
        assert np.abs(made - photo)[10:22, 10:22].mean() < 4 < np.abs(made - photo)[:, 30:].mean(), rel
    code, out, _ = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert "done 0, already done 2" in out
    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - {dataset: photos/, style_pool: paintings/, keep: 'photos/{content_relpath}.mask.png',"
        " output: 'out/{content_relpath}.png'}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "puts the masks in the dataset folder" in err


@pytest.mark.parametrize("member, regions", [
    ("mask", "keep: '{shard}/{key}.mask.png'"),
    ("labels", "labels: '{shard}/{key}.labels.png', regions: {255: keep, default: style}")])
def test_shards_carry_each_sample_s_keep_mask_as_a_member_and_the_output_shards_take_it_along(
        tmp_path, capsys, member, regions):
    """WebDataset in and out (issue 50): ``keep: "{shard}/{key}.mask.png"`` (or a label image,
    ``labels: "{shard}/{key}.labels.png"``) reads each sample's own member (no image of its
    own: the sample's image is its .png), a sample without one fails alone naming it; ``copy:
    mask.png`` puts it beside each output sample."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    from tests.conftest import run_cli

    def png(array) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()
    keep = np.zeros((32, 48), np.uint8)
    keep[8:24, 8:24] = 255
    (tmp_path / "wds").mkdir()
    with tarfile.open(tmp_path / "wds" / "train-000000.tar", "w") as tar:
        for name, data in (("s1.png", png(pattern(48, 32, phase=0.4))), (f"s1.{member}.png", png(keep)),
                           ("s2.png", png(pattern(48, 32, phase=1.3)))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    red_pool(tmp_path)
    (tmp_path / "m.yaml").write_text(
        DATASET_DEFAULTS + "jobs:\n"
        f"  - {{dataset: 'wds/train-000000.tar', style_pool: paintings/, {regions},"
        f" copy: {member}.png, output: 'out/{{shard_stem}}.tar'}}\n")
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert code == 1 and "done 1, already done 0, failed 0, invalid 1" in out, err
    assert "(wds/train-000000.tar/s2.png): mask: " in err and f"s2.{member}.png" in err
    with tarfile.open(tmp_path / "out" / "train-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert sorted(members) == ["s1.json", f"s1.{member}.png", "s1.png"] and members[f"s1.{member}.png"] == png(keep)
    made = np.asarray(Image.open(io.BytesIO(members["s1.png"])), dtype=np.float64)
    photo = pattern(48, 32, phase=0.4).astype(np.float64)
    assert np.abs(made - photo)[10:22, 10:22].mean() < 4 < np.abs(made - photo)[:, 30:].mean()


def test_a_label_image_and_its_table_paint_as_the_masks_they_stand_for(tmp_path, capsys):
    """``labels:`` with a ``regions:`` table (issue 50): a segmentation map's values to
    paintings or keep, the paintings the job's; the picture is the one the same regions drawn
    as masks give (one path). Mistakes found before any work: a colour label image, a value
    named twice, style beside labels, labels without a table; a changed table reruns the job."""
    import numpy as np
    from PIL import Image

    from tests.conftest import run_cli

    Image.fromarray(pattern(64, 48, phase=0.4)).save(tmp_path / "photo.png")
    for name, painting in (("red", stripes(True, 0)), ("blue", stripes(False, 2))):
        Image.fromarray((painting[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
    labels = np.full((48, 64), 3, np.uint8)  # 3: the left half (the default's), 9: the right, 14: kept
    labels[:, 32:] = 9
    labels[16:32, 40:56] = 14
    Image.fromarray(labels).save(tmp_path / "labels.png")
    Image.fromarray(labels).convert("P").save(tmp_path / "palette.png")  # the same values as palette indices
    Image.fromarray(np.stack([labels] * 3, -1)).save(tmp_path / "colour.png")
    for name, region in (("left", labels == 3), ("right", labels == 9), ("keep", labels == 14)):
        Image.fromarray(region.astype(np.uint8) * 255).save(tmp_path / f"{name}.png")
    defaults = ("defaults: {size: 64, steps: 30, scales: '1', style_layers: 'relu1_1,relu2_1,relu3_1',"
                " content_layers: relu2_2, precision: fp32}\n")
    table = "{default: red.png, 9: blue.png, 14: keep}"
    (tmp_path / "m.yaml").write_text(defaults + "jobs:\n"
        f"  - {{content: photo.png, labels: labels.png, regions: {table}, output: out/labels.png}}\n"
        f"  - {{content: photo.png, labels: palette.png, regions: {table}, output: out/palette.png}}\n"
        "  - {content: photo.png, style: [red.png, blue.png], masks: [left.png, right.png], keep: keep.png,"
        " output: out/masks.png}\n"
        f"  - {{content: photo.png, labels: colour.png, regions: {table}, output: out/colour.png}}\n"
        "  - {content: photo.png, labels: labels.png, regions: {3: red.png, '3,9': blue.png}, output: out/twice.png}\n"
        f"  - {{content: photo.png, style: red.png, labels: labels.png, regions: {table}, output: out/style.png}}\n"
        "  - {content: photo.png, labels: labels.png, output: out/alone.png}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "m.yaml:6: labels " in err and "colour.png is a RGB image" in err
    assert "m.yaml:7: regions: label value 3 is named twice" in err
    assert "m.yaml:8: with labels, the regions table names the paintings" in err
    assert "m.yaml:9: labels (a label image: a value per pixel) and regions" in err
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert "done 3, already done 0, failed 0, invalid 4" in out, err
    made = {name: np.asarray(Image.open(tmp_path / "out" / f"{name}.png"), dtype=np.float64)
            for name in ("labels", "palette", "masks")}
    assert np.abs(made["labels"] - made["masks"]).mean() < 1 and np.array_equal(made["labels"], made["palette"])
    photo = np.asarray(Image.open(tmp_path / "photo.png"), dtype=np.float64)
    assert np.abs(made["labels"] - photo)[18:30, 42:54].mean() < 4  # 14: kept as photographed
    assert made["labels"][:, :24, 0].mean() > made["labels"][:, 36:40, 0].mean()  # red columns on the left
    (tmp_path / "m.yaml").write_text((tmp_path / "m.yaml").read_text().replace("9: blue.png", "9: red.png", 1))
    code, out, _ = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert "done 1, already done 2" in out


def test_a_dataset_keeps_the_labelled_objects_its_label_tree_names(tmp_path, capsys):
    """A dataset entry's label images from a tree beside it (``labels:`` a template) and a
    table of ``style`` or ``keep``: the people (15) kept, the rest painted; an image whose
    label image is missing fails alone, naming it."""
    import numpy as np
    from PIL import Image

    from tests.conftest import run_cli

    photo_tree(tmp_path, (("a.png", 0.4), ("sub/b.png", 1.1), ("c.png", 2.0)), "labels", 15)
    red_pool(tmp_path)
    (tmp_path / "m.yaml").write_text(
        DATASET_DEFAULTS + "jobs:\n"
        "  - {dataset: photos/, style_pool: paintings/, labels: 'labels/{content_relpath}.png',"
        " regions: {15: keep, default: style}, output: 'out/{content_relpath}.png'}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "(c.png)" in err and "labels/c.png" in err and "(a.png)" not in err
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--skip-invalid")
    assert "done 2" in out, err
    for rel in ("a", "sub/b"):
        made = np.asarray(Image.open(tmp_path / "out" / f"{rel}.png"), dtype=np.float64)
        photo = np.asarray(Image.open(tmp_path / "photos" / f"{rel}.png"), dtype=np.float64)
        assert np.abs(made - photo)[10:22, 10:22].mean() < 4 < np.abs(made - photo)[:, 30:].mean(), rel
    (tmp_path / "m.yaml").write_text(
        DATASET_DEFAULTS + "jobs:\n"
        "  - {dataset: photos/, style_pool: paintings/, labels: 'labels/{content_relpath}.png',"
        " regions: {15: keep, default: paintings/red.png}, output: 'out/{content_relpath}.png'}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "a dataset entry's values take style" in err


def test_region_to_region_each_part_takes_the_part_of_the_painting_its_style_mask_marks(tmp_path, capsys):
    """``style_masks`` (issue 50, Gatys et al. 2017 Fig. 3): one painting, red columns on its
    left and blue rows on its right; the photo's left half takes the painting's right and its
    right half the painting's left. Without style masks both halves take the whole painting's
    mixture; with them each half takes its own part's colour. A style mask of another shape
    than its painting is refused before any work."""
    import numpy as np
    from PIL import Image

    from tests.conftest import run_cli

    painting = np.full((48, 96, 3), 25, np.uint8)
    painting[:, :48:6, 0] = 230  # the left: red columns
    painting[::5, 48:, 2] = 230  # the right: blue rows
    Image.fromarray(painting).save(tmp_path / "painting.png")
    Image.fromarray(pattern(48, 48, phase=0.4)).save(tmp_path / "photo.png")
    half = np.zeros((48, 48), np.uint8)
    half[:, :24] = 255
    Image.fromarray(half).save(tmp_path / "left.png")
    Image.fromarray(255 - half).save(tmp_path / "right.png")
    its = np.zeros((24, 48), np.uint8)  # drawn at half the painting's size: the same shape
    its[:, :24] = 255
    Image.fromarray(its).save(tmp_path / "its_left.png")
    Image.fromarray(255 - its).save(tmp_path / "its_right.png")
    tiny = ["--size", "48", "--steps", "60", "--scales", "1", "--style-layers", "relu1_1,relu2_1",
            "--content-layers", "relu2_2", "--precision", "fp32", "-q"]
    painting_twice = [tmp_path / "painting.png"] * 2
    masks = ["--mask", tmp_path / "left.png", "--mask", tmp_path / "right.png"]
    code, _, err = run_cli(capsys, "stylize", tmp_path / "photo.png", *painting_twice, "-o", tmp_path / "mixed.png",
                           *masks, *tiny)
    assert code == 0, err
    code, _, err = run_cli(capsys, "stylize", tmp_path / "photo.png", *painting_twice, "-o", tmp_path / "parts.png",
                           *masks, "--style-mask", tmp_path / "its_right.png", "--style-mask",
                           tmp_path / "its_left.png", *tiny)
    assert code == 0, err

    def sides(name):  # (blue - red) on the picture's left half, and on its right
        made = np.asarray(Image.open(tmp_path / name), dtype=np.float64)
        return [float((made[:, part, 2] - made[:, part, 0]).mean()) for part in (slice(0, 20), slice(28, 48))]
    mixed, parts = sides("mixed.png"), sides("parts.png")
    assert parts[0] - parts[1] > 20 and parts[0] - parts[1] > 3 * abs(mixed[0] - mixed[1])
    code, _, err = run_cli(capsys, "stylize", tmp_path / "photo.png", *painting_twice, "-o", tmp_path / "x.png",
                           *masks, "--style-mask", tmp_path / "left.png", "--style-mask", tmp_path / "its_left.png",
                           *tiny)
    assert code == 2 and "left.png is 48x48 px, the painting painting.png 96x48" in err
    (tmp_path / "m.yaml").write_text("jobs:\n"
        "  - {content: photo.png, style: [painting.png, painting.png], masks: [left.png, right.png],"
        " style_masks: [its_right.png, its_left.png], output: out/parts.png}\n"
        "  - {content: photo.png, style: [painting.png, painting.png], masks: [left.png, right.png],"
        " style_masks: [its_right.png], output: out/one.png}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "m.yaml:3: style_masks has 1 image(s) for 2 mask(s)" in err and "m.yaml:2" not in err


def test_jobs_with_regions_run_in_batches_and_end_as_each_alone(tmp_path, capsys):
    """Batches of region jobs (issue 50): a dataset tree whose images keep their labelled part,
    each its own label image, run ``--batch 3`` in one pass (the masks stacked like the
    targets); each picture equals the job run alone up to float rounding."""
    import json

    import numpy as np
    from PIL import Image

    from tests.conftest import run_cli

    for index, phase in enumerate((0.4, 1.1, 2.0)):
        (tmp_path / "photos").mkdir(exist_ok=True)
        Image.fromarray(pattern(48, 32, phase=phase)).save(tmp_path / "photos" / f"p{index}.png")
        labels = np.zeros((32, 48), np.uint8)
        labels[4 + 4 * index:20 + 4 * index, 8:24] = 15  # each image its own part kept
        (tmp_path / "labels").mkdir(exist_ok=True)
        Image.fromarray(labels).save(tmp_path / "labels" / f"p{index}.png")
    red_pool(tmp_path)
    (tmp_path / "m.yaml").write_text(
        DATASET_DEFAULTS + "jobs:\n"
        "  - {dataset: photos/, style_pool: paintings/, labels: 'labels/{content_relpath}.png', regions: {15: keep,"
        " default: style}, output: 'out/{content_relpath}.png'}\n")
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--batch", "3", "--in-process")
    assert code == 0 and "done 3" in out, err
    done = [json.loads(p.read_text()) for p in (tmp_path / ".nstbatch" / "m.yaml" / "done").glob("*.json")]
    assert [r["batch"] for r in done] == [3, 3, 3]
    batched = {r["output"]: np.asarray(Image.open(r["output"])).astype(int) for r in done}
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml", "--batch", "1", "--in-process", "--force",
                             "--state-dir", tmp_path / "solo")
    assert code == 0 and "done 3" in out, err
    for output, pixels in batched.items():
        solo = np.asarray(Image.open(output)).astype(int)
        assert np.abs(solo - pixels).mean() < 0.5, output


def test_a_clip_takes_masks_from_a_folder_of_one_a_frame_or_one_image_for_all(tmp_path, capsys):
    """Regions on clips (issue 50): ``keep`` one image for every frame (the box stays the
    frames' own) and ``masks`` a folder of one a frame (each half its painting), frame-steady
    as any clip; a mask folder that does not hold one mask a frame is found before any work;
    ``stylize clip --keep`` takes the same path."""
    import numpy as np
    from PIL import Image

    from tests.conftest import pan_frames, run_cli

    frames = pan_frames(4, 48, 32)
    (tmp_path / "clip").mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / "clip" / f"f{index:02d}.png")
    for name, painting in (("red", stripes(True, 0)), ("blue", stripes(False, 2))):
        Image.fromarray((painting[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
    keep = np.zeros((32, 48), np.uint8)
    keep[4:16, 28:44] = 255
    Image.fromarray(keep).save(tmp_path / "keep.png")
    for side, columns in (("left", slice(0, 24)), ("right", slice(24, 48))):
        (tmp_path / side).mkdir()
        for index in range(4 if side == "left" else 3):
            half = np.zeros((32, 48), np.uint8)
            half[:, columns] = 255
            Image.fromarray(half).save(tmp_path / side / f"m{index}.png")
    defaults = ("defaults: {size: 48, steps: 30, frame_steps: 10, scales: '1', style_layers: 'relu1_1,relu2_1',"
                " content_layers: relu2_2, precision: fp32}\n")
    (tmp_path / "m.yaml").write_text(defaults + "jobs:\n"
        "  - {video: clip/, style: red.png, keep: keep.png, output: out/kept/}\n"
        "  - {video: clip/, style: [red.png, blue.png], masks: [left/, right/], output: out/halves/}\n")
    code, _, err = run_cli(capsys, "validate", tmp_path / "m.yaml")
    assert code == 1 and "m.yaml:4: mask folder" in err and "holds 3 image(s) for the clip's 4 frames" in err
    Image.fromarray(np.asarray(Image.open(tmp_path / "right" / "m0.png"))).save(tmp_path / "right" / "m3.png")
    code, out, err = run_cli(capsys, "run", tmp_path / "m.yaml")
    assert code == 0 and "done 2" in out, err
    for index, frame in enumerate(frames):
        kept = np.asarray(Image.open(tmp_path / "out" / "kept" / f"f{index:02d}.png"), dtype=np.float64)
        assert np.abs(kept - frame)[6:14, 30:42].mean() < 4 < np.abs(kept - frame)[20:, :20].mean(), index
        halves = np.asarray(Image.open(tmp_path / "out" / "halves" / f"f{index:02d}.png"), dtype=np.float64)
        assert (halves[:, :20, 0] - halves[:, :20, 2]).mean() > (halves[:, 28:, 0] - halves[:, 28:, 2]).mean() + 10
    code, _, err = run_cli(capsys, "stylize", tmp_path / "clip", tmp_path / "red.png", "-o", tmp_path / "one.mp4",
                           "--keep", tmp_path / "keep.png", "--size", "48", "--steps", "4", "--frame-steps", "2",
                           "--scales", "1", "--style-layers", "relu1_1", "--content-layers", "relu1_1", "-q")
    assert code == 0 and (tmp_path / "one.mp4").is_file(), err
