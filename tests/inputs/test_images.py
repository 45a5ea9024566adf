"""load_image: every format decodes to HxWx3 uint8 RGB; bad files raise ImageDecodeError."""

import errno
import os
from importlib import resources

import numpy as np
import pytest
from PIL import Image, ImageOps

from idcluster.inputs.images import NEUTRAL_BACKGROUND, ImageDecodeError, ImageReadError, decoders_id, load_image

FACE = resources.files("insightface").joinpath("data/images/Tom_Hanks_54745.png")
W, H = 100, 60  # deliberately not square, so a swapped width/height is caught


@pytest.fixture(scope="module")
def face() -> Image.Image:
    with Image.open(FACE) as im:
        return im.convert("RGB").resize((W, H))


@pytest.mark.parametrize(
    "name, mode, lossless",
    [
        ("face.png", "RGB", True),
        ("face.bmp", "RGB", True),
        ("face.jpg", "RGB", False),
        ("face.webp", "RGB", False),
        ("face.pgm", "L", True),
    ],
)
def test_formats_decode_to_rgb_uint8(tmp_path, face, name, mode, lossless):
    src = face.convert(mode)
    src.save(tmp_path / name)
    arr = load_image(tmp_path / name)
    assert arr.shape == (H, W, 3) and arr.dtype == np.uint8
    expected = np.asarray(src.convert("RGB")).astype(int)
    diff = np.abs(arr.astype(int) - expected)
    if lossless:
        assert diff.max() == 0
    else:
        assert diff.mean() < 8  # lossy codec: close to the source, not a different image
    if mode == "L":
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_rgba_transparent_region_is_neutral_grey(tmp_path, face):
    rgba = face.convert("RGBA")
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:, : W // 2] = 0  # left half fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "cutout.png")
    arr = load_image(tmp_path / "cutout.png")
    assert arr.shape == (H, W, 3) and arr.dtype == np.uint8
    assert NEUTRAL_BACKGROUND == (128, 128, 128)
    assert (arr[:, : W // 2] == NEUTRAL_BACKGROUND).all()
    np.testing.assert_array_equal(arr[:, W // 2 :], np.asarray(face)[:, W // 2 :])


def test_palette_with_transparency(tmp_path, face):
    pal = face.quantize(colors=16)
    idx = np.asarray(pal).copy()
    idx[:10, :10] = 15
    idx[10:] = np.where(idx[10:] == 15, 14, idx[10:])  # index 15 only in the corner
    pal = Image.fromarray(idx, mode="P")
    pal.putpalette(face.quantize(colors=16).getpalette())
    pal.info["transparency"] = 15
    pal.save(tmp_path / "pal.png", transparency=15)
    arr = load_image(tmp_path / "pal.png")
    assert arr.shape == (H, W, 3) and arr.dtype == np.uint8
    assert (arr[:10, :10] == NEUTRAL_BACKGROUND).all()
    opaque = np.asarray(pal.convert("RGBA"))[10:, :, :3]
    np.testing.assert_array_equal(arr[10:], opaque)


def test_16bit_grey_is_scaled_not_clipped(tmp_path, face):
    grey = np.asarray(face.convert("L")).astype(np.uint32) * 257  # spread over 0..65535
    grey[0, 0], grey[0, 1], grey[0, 2] = 0, 32768, 65535
    im = Image.fromarray(grey.astype(np.uint16))
    assert im.mode == "I;16"
    im.save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode == "I;16"  # the file really is 16-bit
    arr = load_image(tmp_path / "deep.png")
    assert arr.shape == (H, W, 3) and arr.dtype == np.uint8
    assert tuple(arr[0, 0]) == (0, 0, 0)
    assert arr[0, 1, 0] == pytest.approx(128, abs=1)
    assert tuple(arr[0, 2]) == (255, 255, 255)
    # v*257 scales back to v (within rounding), instead of clipping everything to 255
    np.testing.assert_allclose(arr[1:, :, 0], np.asarray(face.convert("L"))[1:], atol=1)


def test_exif_orientation_6_is_applied(tmp_path, face):
    exif = face.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    face.save(tmp_path / "rotated.png", exif=exif.tobytes())
    arr = load_image(tmp_path / "rotated.png")
    assert arr.shape == (W, H, 3)  # 60 wide, 100 tall after rotation
    src = np.asarray(face)
    # Pillow's reference transposition, and that it is a clockwise quarter turn.
    with Image.open(tmp_path / "rotated.png") as im:
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    np.testing.assert_array_equal(reference, np.rot90(src, k=-1))
    np.testing.assert_array_equal(arr, np.rot90(src, k=-1))
    assert not np.array_equal(arr, np.rot90(src, k=1))


def test_truncated_jpeg_raises(tmp_path, face):
    face.save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated"):
        load_image(tmp_path / "cut.jpg")


def test_corrupt_jpeg_raises(tmp_path, face):
    face.save(tmp_path / "full.jpg", quality=95)
    data = bytearray((tmp_path / "full.jpg").read_bytes())
    dht = data.find(b"\xff\xc4")  # Huffman table segment
    assert dht > 0
    data[dht + 4 : dht + 44] = b"\xff" * 40  # SOI/JFIF intact, tables destroyed
    (tmp_path / "corrupt.jpg").write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError):
        load_image(tmp_path / "corrupt.jpg")


def test_text_file_named_jpg_raises(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image at all\n")
    with pytest.raises(ImageDecodeError, match="UnidentifiedImageError"):
        load_image(tmp_path / "notes.jpg")


def test_missing_file_raises(tmp_path):
    with pytest.raises(ImageDecodeError, match="FileNotFoundError"):
        load_image(tmp_path / "nope.png")


def test_read_errors_are_told_apart_from_decode_errors(tmp_path, face, monkeypatch):
    """Only a decode failure is the same next time; an OSError while reading (ImageReadError) may pass."""
    (tmp_path / "notes.jpg").write_text("not an image at all\n")
    face.save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    for name in ("notes.jpg", "cut.jpg"):  # Pillow's own OSErrors: the bytes, not the disk
        with pytest.raises(ImageDecodeError) as info:
            load_image(tmp_path / name)
        assert not isinstance(info.value, ImageReadError)
    with pytest.raises(ImageReadError, match="FileNotFoundError"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="IsADirectoryError"):
        load_image(tmp_path)

    face.save(tmp_path / "locked.png")
    if os.geteuid() != 0:
        (tmp_path / "locked.png").chmod(0)
    else:  # root reads any file: fail the open the way a locked file does
        real_open = Image.open

        def denied(path, *a, **k):
            if str(path).endswith("locked.png"):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, *a, **k)

        monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageReadError, match="PermissionError"):
        load_image(tmp_path / "locked.png")


def test_decoders_id_names_pillow_and_is_stable():
    import PIL

    assert decoders_id() == decoders_id()
    assert decoders_id().startswith(f"Pillow {PIL.__version__} ")
