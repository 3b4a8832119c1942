import numpy as np
import pytest
from PIL import Image

from nstbatch import fs, geometry
from nstbatch.io import images
from nstbatch.errors import InputError


def save(tmp_path, im, name, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return path


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = save(tmp_path, Image.new("L", (4, 3), 77), "g.png")
    assert np.array_equal(np.asarray(images.load_image(path)), np.full((3, 4, 3), 77))


def test_sixteen_bit_png_is_scaled_by_its_range(tmp_path):
    im = Image.fromarray(np.array([[0, 65535], [32896, 257]], np.uint16))
    path = save(tmp_path, im, "16.png")
    rgb = np.asarray(images.load_image(path))[..., 0]
    assert rgb.tolist() == [[0, 255], [128, 1]]


def test_palette_with_transparency_is_composited_over_white(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    path = save(tmp_path, im, "p.png", transparency=0)
    assert np.asarray(images.load_image(path)).tolist() == [[[255, 255, 255], [0, 0, 255]]]


def test_rgba_half_transparent_over_white(tmp_path):
    path = save(tmp_path, Image.new("RGBA", (1, 1), (0, 0, 0, 128)), "a.png")
    assert np.asarray(images.load_image(path))[0, 0].tolist() == [127, 127, 127]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = save(tmp_path, Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "c.jpg")
    pixel = np.asarray(images.load_image(path))[4, 4]
    assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60  # red


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (6, 2), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = save(tmp_path, im, "r.jpg", exif=exif.tobytes())
    assert images.load_image(path).size == (2, 6)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert np.asarray(images.load_image(path))[0, 0].tolist()[0] > 200


def test_resize_sets_the_long_side():
    assert images.resize_long_side(Image.new("RGB", (300, 200)), 60).size == (60, 40)
    assert images.resize_long_side(Image.new("RGB", (200, 300)), 600).size == (400, 600)


@pytest.mark.parametrize("content, match", [
    (None, "no such file"),
    (b"", "empty"),
    (b"this is text, not a picture", "not an image"),
])
def test_probe_refuses_with_the_file_and_the_reason(tmp_path, content, match):
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match) as e:
        images.probe_image(path)
    assert str(path) in str(e.value)


def test_truncated_jpeg_fails_to_decode_with_a_clear_error(tmp_path):
    good = save(tmp_path, Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "t.jpg")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        images.load_image(good)


@pytest.mark.parametrize("name, fmt", [("o.png", "PNG"), ("o.JPG", "JPEG"), ("o.webp", "WEBP"), ("o.tif", "TIFF")])
def test_save_by_extension_atomically(tmp_path, name, fmt):
    path = images.save_image(Image.new("RGB", (8, 8), (1, 2, 3)), tmp_path / name, {"k": "v"})
    with Image.open(path) as im:
        assert im.format == fmt
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left behind


def test_png_carries_the_metadata_as_text_chunks(tmp_path):
    path = images.save_image(Image.new("RGB", (2, 2)), tmp_path / "m.png",
                             {"params": {"steps": 3}, "weights": "w-id"})
    with Image.open(path) as im:
        assert im.text["nstbatch:weights"] == "w-id"
        assert im.text["nstbatch:params"] == '{"steps": 3}'


def test_failed_write_leaves_no_file(tmp_path):
    class Boom(Exception):
        pass

    def write(f):
        f.write(b"half")
        raise Boom()

    with pytest.raises(Boom):
        fs.atomic_write(tmp_path / "o.png", write)
    assert list(tmp_path.iterdir()) == []


def test_unknown_output_extension(tmp_path):
    with pytest.raises(InputError, match=".png"):
        images.check_output_path(tmp_path / "out.gif")


def test_output_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create the output folder"):
        images.check_output_path(blocker / "sub" / "o.png")


@pytest.mark.parametrize("name", ["m.png", "m.jpg", "m.webp", "m.tiff"])
def test_every_output_format_carries_its_provenance(tmp_path, name):
    meta = {"params": {"steps": 3, "preset": "fast"}, "weights": "w-id"}
    path = images.save_image(Image.new("RGB", (8, 8), (9, 99, 199)), tmp_path / name, meta)
    assert images.read_provenance(path) == meta


def test_jpeg_quality_and_full_resolution_colour(tmp_path):
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    sizes = {}
    for quality in (30, 95):
        path = images.save_image(noisy, tmp_path / f"q{quality}.jpg", jpeg_quality=quality)
        sizes[quality] = path.stat().st_size
        with Image.open(path) as im:
            assert im.layer == [(1, 1, 1, 0), (2, 1, 1, 1), (3, 1, 1, 1)]  # 4:4:4: no chroma halving
    assert sizes[30] < sizes[95]


def test_webp_quality_100_is_lossless(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = images.save_image(Image.fromarray(pixels), tmp_path / "l.webp", webp_quality=100)
    assert np.array_equal(np.asarray(images.load_image(path)), pixels)
    lossy = images.save_image(Image.fromarray(pixels), tmp_path / "q.webp", webp_quality=50)
    assert not np.array_equal(np.asarray(images.load_image(lossy)), pixels)


@pytest.mark.parametrize("width, height, resize, crop, expected", [
    (400, 300, "long", "none", (200, 150)),
    (400, 300, "short", "none", (267, 200)),
    (300, 400, "short", "none", (200, 267)),
    (400, 300, "long", "center", (200, 200)),  # crop: the short side is scaled to size
    (300, 400, "short", "center", (200, 200)),
    (150, 100, "long", "center", (200, 200)),  # upscaled first, then cropped
])
def test_output_geometry_from_the_header_alone(width, height, resize, crop, expected):
    assert geometry.output_size(width, height, 200, resize, crop) == expected


def test_center_crop_keeps_the_middle(tmp_path):
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, 100:200] = 255  # a white middle third between black sides
    fitted = images.fit_image(Image.fromarray(pixels), 50, "long", "center")
    assert fitted.size == (50, 50)
    assert np.asarray(fitted).min() > 240  # only the white middle is left
    assert images.fit_image(Image.fromarray(pixels), 50).size == (50, 17)  # the default: long side


def test_a_missing_file_beside_a_near_name_gets_a_did_you_mean(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "hoovertowernight.jpg")
    with pytest.raises(InputError, match=r"hoovertower.jpg: no such file \(did you mean hoovertowernight.jpg\?\)"):
        images.probe_image(tmp_path / "hoovertower.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "s.png")
    with pytest.raises(InputError, match=r"missing.png: no such file \(check the path\)"):
        images.probe_image(tmp_path / "missing.png")  # no 's.png' for a shared extension
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.JPG")
    with pytest.raises(InputError, match=r"did you mean cat.JPG\?"):
        images.probe_image(tmp_path / "cat.jpg")


def srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("name", ["deep.png", "deep.tif"])
def test_a_sixteen_bit_output_keeps_its_levels_its_profile_and_its_provenance(tmp_path, name):
    import torch

    from nstbatch.engine.pixels import to_uint16

    ramp = torch.linspace(0, 1, 1000).view(1, 1, 1, 1000).expand(1, 3, 4, 1000).clone()
    ramp[:, 1] = 1 - ramp[:, 1]
    meta, icc = {"params": {"bit_depth": 16}}, srgb_profile()
    path = images.save_image(to_uint16(ramp), tmp_path / name, meta, icc_profile=icc)
    if name.endswith(".png"):
        import png

        width, height, rows, info = png.Reader(filename=str(path)).read()
        assert info["bitdepth"] == 16 and not info["greyscale"]
        pixels = np.vstack([np.asarray(row, np.uint16) for row in rows]).reshape(height, width, 3)
    else:
        import tifffile

        pixels = tifffile.imread(path)
    assert pixels.dtype == np.uint16 and pixels.shape == (4, 1000, 3)
    assert len(np.unique(pixels[0, :, 0])) == 1000  # 8 bits would hold 256
    assert np.array_equal(pixels[..., 1], 65535 - pixels[..., 0])
    assert images.read_provenance(path) == meta
    with Image.open(path) as im:  # what thumbnails and viewers see
        assert im.info.get("icc_profile") == icc
        assert im.convert("RGB").size == (1000, 4)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_sixteen_bits_are_for_png_and_tiff_and_an_input_s_profile_is_found(tmp_path):
    with pytest.raises(InputError, match="bit_depth 16 needs a .png or .tif output"):
        images.check_bit_depth(tmp_path / "o.jpg", 16)
    images.check_bit_depth(tmp_path / "o.jpg", 8)
    images.check_bit_depth(tmp_path / "o.TIFF", 16)
    tagged = save(tmp_path, Image.new("RGB", (4, 4)), "tagged.jpg", icc_profile=srgb_profile())
    plain = save(tmp_path, Image.new("RGB", (4, 4)), "plain.png")
    assert images.icc_profile(tagged) == srgb_profile() and images.icc_profile(plain) is None
    path = images.save_image(Image.new("RGB", (4, 4)), tmp_path / "o.webp", icc_profile=srgb_profile())
    assert images.icc_profile(path) == srgb_profile()
