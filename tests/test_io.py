"""Tests for seglens.io: tiny hand-built images with exact expected pixels, and real photos."""

import contextlib
import io
import os
import pickle
import queue
import socket
import struct
import threading
import time
import warnings
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, features

from seglens.io import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_URL_MAX_BYTES,
    DEFAULT_URL_TIMEOUT,
    IMAGE_EXTENSIONS,
    ImageLoadError,
    InputImage,
    atomic_open,
    fetch_url,
    find_images,
    image_size,
    is_url,
    load_image,
    save_image,
    save_mask_png,
    to_rgb,
    write_csv,
    write_json,
)

TRUNCATED = "truncated or incomplete file (re-download or re-export it)"


def _opened(path: Path, attribute: str):
    with Image.open(path) as image:
        return getattr(image, attribute)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR (8-bit RGB) + IEND, with no pixel data at all."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _pixels(image: Image.Image) -> list:
    assert image.mode == "RGB"
    return [tuple(int(v) for v in px) for px in np.asarray(image).reshape(-1, 3)]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()  # (512, 512, 3) uint8


# ---------------------------------------------------------------- constants


def test_constants():
    assert ALLOWED_FORMATS[:6] == ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
    assert ("AVIF" in ALLOWED_FORMATS) == features.check_module("avif")
    base = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
    assert IMAGE_EXTENSIONS == base | ({".avif"} if "AVIF" in ALLOWED_FORMATS else set())
    assert DEFAULT_MAX_PIXELS == 100_000_000


# ---------------------------------------------------------------- to_rgb, per mode


def test_to_rgb_rgb_is_returned_as_is():
    image = Image.new("RGB", (2, 1), (1, 2, 3))
    assert to_rgb(image) is image


def test_to_rgb_bilevel_and_gray():
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    assert _pixels(to_rgb(bilevel)) == [(0, 0, 0), (255, 255, 255)]
    gray = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    assert _pixels(to_rgb(gray)) == [(0, 0, 0), (77, 77, 77), (255, 255, 255)]


def test_to_rgb_rgba_over_white_exact():
    rgba = Image.fromarray(np.array([[[200, 100, 0, 128], [9, 9, 9, 0], [9, 8, 7, 255]]], dtype=np.uint8))
    # alpha 128: round(c * 128/255 + 255 * 127/255): 200 -> 227.39, 100 -> 177.20, 0 -> 127.0
    assert _pixels(to_rgb(rgba)) == [(227, 177, 127), (255, 255, 255), (9, 8, 7)]


def test_to_rgb_la_over_white_exact():
    la = Image.fromarray(np.array([[[100, 128], [100, 0], [100, 255]]], dtype=np.uint8), mode="LA")
    # 100 * 128/255 + 127 = 177.20
    assert _pixels(to_rgb(la)) == [(177, 177, 177), (255, 255, 255), (100, 100, 100)]


def test_to_rgb_premultiplied_modes():
    # premultiplied colour + (255 - alpha): 100 + 127, 50 + 127, 0 + 127
    rgba_pre = Image.frombytes("RGBa", (1, 1), bytes([100, 50, 0, 128]))
    assert _pixels(to_rgb(rgba_pre)) == [(227, 177, 127)]
    la_pre = Image.frombytes("La", (1, 1), bytes([50, 128]))
    assert _pixels(to_rgb(la_pre)) == [(177, 177, 177)]


def _palette_image() -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 0, 0])
    image.putpixel((1, 0), 1)
    return image


def test_to_rgb_palette():
    assert _pixels(to_rgb(_palette_image())) == [(10, 20, 30), (200, 0, 0)]


def test_to_rgb_palette_transparency_index():
    image = _palette_image()
    image.info["transparency"] = 1
    assert _pixels(to_rgb(image)) == [(10, 20, 30), (255, 255, 255)]


def test_to_rgb_pa():
    image = Image.frombytes("PA", (2, 1), bytes([0, 255, 1, 0]))  # (index, alpha) pairs
    image.putpalette([10, 20, 30, 200, 0, 0])
    assert _pixels(to_rgb(image)) == [(10, 20, 30), (255, 255, 255)]


def test_to_rgb_gray_and_rgb_with_transparency_colour():
    gray = Image.fromarray(np.array([[0, 7]], dtype=np.uint8))
    gray.info["transparency"] = 7
    assert _pixels(to_rgb(gray)) == [(0, 0, 0), (255, 255, 255)]
    rgb = Image.fromarray(np.array([[[1, 2, 3], [9, 9, 9]]], dtype=np.uint8))
    rgb.info["transparency"] = (1, 2, 3)
    assert _pixels(to_rgb(rgb)) == [(255, 255, 255), (9, 9, 9)]


def test_to_rgb_cmyk_plain_and_with_broken_profile():
    values = np.array([[[0, 255, 255, 0], [0, 0, 0, 255], [0, 0, 0, 0], [51, 0, 0, 51]]], dtype=np.uint8)
    cmyk = Image.frombytes("CMYK", (4, 1), values.tobytes())
    # Pillow: R = (255 - C) * (255 - K) / 255, so (51, 0, 0, 51) -> 204 * 204 / 255 = 163.2
    expected = [(255, 0, 0), (0, 0, 0), (255, 255, 255), (163, 204, 204)]
    assert _pixels(to_rgb(cmyk)) == expected
    cmyk.info["icc_profile"] = b"not an ICC profile"  # falls back to the plain formula
    assert _pixels(to_rgb(cmyk)) == expected


def test_to_rgb_cmyk_jpeg_file(tmp_path):
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(_encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100))
    image = load_image(path)
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image).astype(int) - [255, 0, 0]).max() <= 2  # lossy


def test_to_rgb_ycbcr_and_hsv():
    assert _pixels(to_rgb(Image.new("YCbCr", (1, 1), (128, 128, 128)))) == [(128, 128, 128)]
    assert _pixels(to_rgb(Image.new("HSV", (1, 1), (0, 0, 200)))) == [(200, 200, 200)]


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_to_rgb_sixteen_bit(mode):
    values = np.array([[0, 128, 129, 257, 1000, 65535]], dtype=np.uint16)
    dtype = {"I;16B": ">u2", "I;16N": "=u2"}.get(mode, "<u2")
    image = Image.frombytes(mode, (6, 1), values.astype(dtype).tobytes())
    # round(v / 257): 128 -> 0.498 -> 0, 129 -> 0.502 -> 1, 257 -> 1, 1000 -> 3.89 -> 4, 65535 -> 255
    assert [px[0] for px in _pixels(to_rgb(image))] == [0, 0, 1, 1, 4, 255]
    assert {px[0] for px in _pixels(to_rgb(image))} == {px[2] for px in _pixels(to_rgb(image))}


def test_to_rgb_int32_min_max_stretch():
    image = Image.fromarray(np.array([[-100, 0, 200, 300]], dtype=np.int32))
    assert image.mode == "I"
    # (v + 100) / 400 * 255: 0 -> 63.75 -> 64, 200 -> 191.25 -> 191
    assert _pixels(to_rgb(image)) == [(0, 0, 0), (64, 64, 64), (191, 191, 191), (255, 255, 255)]
    constant = Image.fromarray(np.full((1, 2), 5000, dtype=np.int32))
    assert _pixels(to_rgb(constant)) == [(0, 0, 0), (0, 0, 0)]


def test_to_rgb_float_nan_inf_count_as_zero():
    image = Image.fromarray(np.array([[np.nan, -np.inf, -1.0, 2.0, 4.0]], dtype=np.float32))
    assert image.mode == "F"
    # values become [0, 0, -1, 2, 4]; (v + 1) / 5 * 255: 0 -> 51, 2 -> 153
    assert [px[0] for px in _pixels(to_rgb(image))] == [51, 51, 0, 153, 255]


def test_to_rgb_unconvertible_mode_names_it():
    image = Image.new("HSV", (1, 1))

    def refuse(*args, **kwargs):
        raise ValueError("conversion not supported")

    image.convert = refuse
    with pytest.raises(ImageLoadError, match=r"^<image>: cannot convert image mode 'HSV' to RGB"):
        to_rgb(image)


# ---------------------------------------------------------------- load_image: good files


def test_load_png_path_bytes_and_file_objects(tmp_path, astronaut):
    data = _encode(Image.fromarray(astronaut), "PNG")
    path = tmp_path / "astronaut.png"
    path.write_bytes(data)

    class ReadOnly:  # not seekable, like a pipe
        def __init__(self, data: bytes) -> None:
            self._buffer = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self._buffer.read(size)

    with open(path, "rb") as fp:
        from_file = load_image(fp)
    for image in (load_image(path), load_image(str(path)), load_image(data), from_file, load_image(ReadOnly(data))):
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), astronaut)


def test_load_real_jpeg_from_skimage(tmp_path):
    chelsea = skimage.data.chelsea()  # (300, 451, 3)
    path = tmp_path / "chelsea.JPG"
    path.write_bytes(_encode(Image.fromarray(chelsea), "JPEG", quality=95))
    image = load_image(path)
    assert (image.mode, image.size) == ("RGB", (451, 300))
    assert np.abs(np.asarray(image).astype(int) - chelsea).mean() < 3


def test_load_exif_orientation_png_exact(tmp_path):
    pixels = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40  # 3 wide, 2 high
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = tmp_path / "rotated.png"
    Image.fromarray(pixels).save(path, exif=exif)
    image = load_image(path)
    assert image.size == (2, 3)
    np.testing.assert_array_equal(np.asarray(image)[..., 0], np.rot90(pixels, k=-1))


def test_load_exif_orientation_jpeg(tmp_path):
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (255, 0, 0)  # left half red
    pixels[:, 32:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 8  # display rotated 90 degrees counter-clockwise: right half goes on top
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, quality=100, exif=exif)
    image = load_image(path)
    assert image.size == (32, 64)
    assert np.abs(np.asarray(image.getpixel((16, 5))) - (0, 0, 255)).max() <= 3
    assert np.abs(np.asarray(image.getpixel((16, 58))) - (255, 0, 0)).max() <= 3


def test_load_multiframe_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), color) for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert _opened(path, "n_frames") == 3
    assert set(_pixels(load_image(path))) == {(255, 0, 0)}


def test_load_multipage_tiff_first_page(tmp_path):
    pages = [Image.new("L", (4, 4), value) for value in (10, 200)]
    path = tmp_path / "pages.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert _opened(path, "n_frames") == 2
    assert set(_pixels(load_image(path))) == {(10, 10, 10)}


@pytest.mark.parametrize("fmt,options,tolerance", [("PNG", {}, 0), ("WEBP", {"lossless": True}, 0), ("MPO", {}, 2)])
def test_load_animated_and_mpo_first_frame(fmt, options, tolerance):
    # APNG, animated WebP and MPO (phone cameras' "JPEG" with extra frames)
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    data = _encode(red, fmt, save_all=True, append_images=[blue], **options)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.n_frames) == (fmt, 2)
    assert np.abs(np.asarray(load_image(data)).astype(int) - (255, 0, 0)).max() <= tolerance


def test_load_palette_png_with_alpha_table(tmp_path):
    path = tmp_path / "alpha.png"
    _palette_image().save(path, transparency=bytes([255, 128]))  # index 1 half transparent
    # (200, 0, 0) at alpha 128 over white: 200 -> 227.39, 0 -> 127.0
    assert _pixels(load_image(path)) == [(10, 20, 30), (227, 127, 127)]


def test_load_sixteen_bit_png(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.uint16)).save(path)
    assert _pixels(load_image(path)) == [(0, 0, 0), (4, 4, 4), (255, 255, 255)]


# ---------------------------------------------------------------- load_image: bad files


@pytest.mark.parametrize("fmt,suffix", [("ICO", ".ico"), ("PCX", ".pcx"), ("TGA", ".tga"), ("PPM", ".ppm")])
def test_load_refuses_formats_outside_the_allowlist(tmp_path, fmt, suffix):
    path = tmp_path / f"image{suffix}"
    path.write_bytes(_encode(Image.new("RGB", (16, 16), (1, 2, 3)), fmt))
    assert _opened(path, "format") == fmt  # Pillow itself could read it
    with pytest.raises(ImageLoadError, match=r"not an image or not a supported format \(supported: JPEG, PNG,"):
        load_image(path)


def test_load_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert str(info.value) == f"{path}: empty file (0 bytes)"
    assert (info.value.path, info.value.reason) == (str(path), "empty file (0 bytes)")
    with pytest.raises(ImageLoadError, match=r"^<bytes>: empty file \(0 bytes\)$"):
        load_image(b"")


def test_load_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageLoadError, match=r"notes\.jpg: not an image or not a supported format"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_load_truncated(tmp_path, astronaut, fmt):
    data = _encode(Image.fromarray(astronaut), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == TRUNCATED


def test_load_truncated_webp_is_an_error(astronaut):
    data = _encode(Image.fromarray(astronaut), "WEBP")
    with pytest.raises(ImageLoadError, match=r"^<bytes>: "):
        load_image(data[: len(data) // 2])


def test_load_max_pixels(astronaut):
    data = _encode(Image.fromarray(astronaut), "PNG")  # 512 * 512 = 262144 pixels
    assert load_image(data, max_pixels=262144).size == (512, 512)
    message = r"^<bytes>: image is 262144 pixels, above the limit of 262143 \(raise --max-pixels to allow it\)$"
    with pytest.raises(ImageLoadError, match=message):
        load_image(data, max_pixels=262143)
    with pytest.raises(ValueError, match="max_pixels must be a positive int or None"):
        load_image(data, max_pixels=0)


def test_load_max_pixels_checked_before_decoding():
    # The file has no pixel data at all: decoding it would fail as truncated, so getting the
    # size error proves the limit is checked from the header alone.
    header = _png_header_only(12000, 10000)
    with pytest.raises(ImageLoadError, match=r"image is 120000000 pixels, above the limit of 100000000"):
        load_image(header)


def test_load_decompression_bomb_warning_is_silenced_error_kept(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # warn above 100 pixels, refuse above 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(_encode(Image.new("RGB", (12, 12)), "PNG")).size == (12, 12)  # 144
    with pytest.raises(ImageLoadError, match=r"decompression bomb refused by Pillow \(Image size \(256 pixels\)"):
        load_image(_encode(Image.new("RGB", (16, 16)), "PNG"), max_pixels=None)


def test_load_pillow_decompression_bomb_guard_stays_on():
    header = _png_header_only(20000, 10000)  # 200M pixels > 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match=r"^<bytes>: decompression bomb refused by Pillow"):
        load_image(header, max_pixels=None)


def test_load_missing_and_folder(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageLoadError) as info:
        load_image(missing)
    assert str(info.value) == f"{missing}: no such file (check the path)"
    with pytest.raises(ImageLoadError, match="is a folder, not an image file"):
        load_image(tmp_path)


def test_load_rejects_non_sources():
    with pytest.raises(TypeError, match="load_image expects a path, bytes or a binary file object, got int"):
        load_image(3)


def test_image_load_error_is_one_line_and_picklable():
    error = ImageLoadError("a.jpg", "broken\nstream")
    assert str(error) == "a.jpg: broken stream"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == ("a.jpg", "broken stream", "a.jpg: broken stream")


# ---------------------------------------------------------------- image_size, check_size


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk) of each chunk of a PNG."""
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos : pos + 12 + length]))
        pos += 12 + length
    return chunks


def _move_after_pixels(data: bytes, kind: bytes) -> bytes:
    """The PNG with its ``kind`` chunks moved after the image data (as some tools write eXIf)."""
    chunks = _png_chunks(data)
    moved, rest = [c for c in chunks if c[0] == kind], [c for c in chunks if c[0] != kind]
    last_idat = max(i for i, c in enumerate(rest) if c[0] == b"IDAT")
    rest[last_idat + 1 : last_idat + 1] = moved
    return data[:8] + b"".join(c[1] for c in rest)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera"])
def test_image_size_is_the_decoded_size_of_real_images(name, tmp_path):
    pixels = getattr(skimage.data, name)()
    formats = [("JPEG", {}), ("PNG", {}), ("WEBP", {}), ("BMP", {}), ("GIF", {}), ("TIFF", {"compression": "tiff_lzw"})]
    formats += [("AVIF", {})] if "AVIF" in ALLOWED_FORMATS else []
    for fmt, options in formats:
        data = _encode(Image.fromarray(pixels), fmt, **options)
        assert image_size(data) == load_image(data).size == (pixels.shape[1], pixels.shape[0]), fmt
    path = tmp_path / f"{name}.jpg"
    path.write_bytes(_encode(Image.fromarray(pixels), "JPEG"))
    with open(path, "rb") as f:
        assert image_size(path) == image_size(str(path)) == image_size(f) == (pixels.shape[1], pixels.shape[0])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_image_size_applies_the_exif_orientation(fmt):
    photo = Image.fromarray(skimage.data.chelsea())  # 451 x 300
    for orientation in range(1, 9):
        data = _encode(photo, fmt, exif=_exif(orientation))
        expected = (300, 451) if orientation >= 5 else (451, 300)  # 5-8 transpose or turn by 90 degrees
        assert image_size(data) == load_image(data).size == expected, orientation


def test_image_size_reads_png_metadata_after_the_pixel_data():
    # eXIf (and an XMP packet) may follow the pixel data; Pillow reads them only when loading,
    # and load_image's exif_transpose then turns the image: image_size reads them without decoding.
    photo = Image.fromarray(skimage.data.chelsea())
    late_exif = _move_after_pixels(_encode(photo, "PNG", exif=_exif(6)), b"eXIf")
    kinds = [c[0] for c in _png_chunks(late_exif)]
    assert kinds[-2:] == [b"eXIf", b"IEND"] and kinds.index(b"IDAT") < kinds.index(b"eXIf")
    with Image.open(io.BytesIO(late_exif)) as opened:
        assert "exif" not in opened.info  # not known from the header
    assert image_size(late_exif) == load_image(late_exif).size == (300, 451)
    from PIL import PngImagePlugin

    xmp = PngImagePlugin.PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
                 '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                 '<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="8"/>'
                 '</rdf:RDF></x:xmpmeta>')  # fmt: skip
    late_xmp = _move_after_pixels(_encode(photo, "PNG", pnginfo=xmp), b"iTXt")
    assert image_size(late_xmp) == load_image(late_xmp).size == (300, 451)
    apng = _encode(photo, "PNG", save_all=True, append_images=[photo], exif=_exif(6))
    assert image_size(apng) == load_image(apng).size == (300, 451)


def test_image_size_reads_the_header_only():
    # No pixel data at all: decoding fails; the size comes from IHDR alone.
    assert image_size(_png_header_only(12000, 8000)) == (12000, 8000)
    with pytest.raises(ImageLoadError, match="could not decode image data"):
        load_image(_png_header_only(120, 80))


def test_image_size_errors_are_load_images(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    ico = _encode(Image.new("RGB", (16, 16)), "ICO")  # a format outside the allowlist
    big = _encode(Image.new("RGB", (20, 10)), "PNG")
    cases = [
        (empty, {}),
        (text, {}),
        (ico, {}),
        (big, {"max_pixels": 199}),
        (_png_header_only(20000, 10000), {"max_pixels": None}),
        (tmp_path / "nope.png", {}),
        (tmp_path, {}),
    ]
    for source, kwargs in cases:
        with pytest.raises(ImageLoadError) as from_header:
            image_size(source, **kwargs)
        with pytest.raises(ImageLoadError) as from_pixels:
            load_image(source, **kwargs)
        assert (from_header.value.path, from_header.value.reason, from_header.value.kind) == (
            from_pixels.value.path,
            from_pixels.value.reason,
            from_pixels.value.kind,
        )
    assert image_size(big, max_pixels=200) == (20, 10)
    with pytest.raises(TypeError, match="image_size expects a path, bytes or a binary file object, got int"):
        image_size(3)
    with pytest.raises(ValueError, match="max_pixels must be a positive int or None"):
        image_size(big, max_pixels=0)


def test_check_size_gets_the_oriented_header_size_before_decoding():
    from seglens.inference import ImageShapeError

    calls = []

    def refuse(width, height):
        calls.append((width, height))
        raise ImageShapeError((width, height), f"image is {width}x{height}: too elongated", "use --tile 512 or crop it")

    header = _png_header_only(30000, 20)  # no pixel data: decoding it fails
    with pytest.raises(ImageLoadError) as info:
        load_image(header, check_size=refuse)
    assert calls == [(30000, 20)]
    assert (info.value.kind, info.value.reason) == (
        "bad_shape",
        "image is 30000x20: too elongated; use --tile 512 or crop it",
    )
    assert str(info.value) == "<bytes>: image is 30000x20: too elongated; use --tile 512 or crop it"
    assert (
        isinstance(info.value.__cause__, ImageShapeError)
        and info.value.__cause__.cli_hint == "use --tile 512 or crop it"
    )
    # a check that passes: then the pixels are decoded (and here found missing)
    with pytest.raises(ImageLoadError, match="could not decode image data"):
        load_image(header, check_size=lambda w, h: None)
    # the size after EXIF orientation, as load_image returns the image
    turned = _encode(Image.new("RGB", (40, 10)), "JPEG", exif=_exif(6))
    seen = []
    assert load_image(turned, check_size=lambda w, h: seen.append((w, h))).size == (10, 40)
    assert seen == [(10, 40)]
    # the pixel limit comes first; any ValueError is a bad shape; other errors are not the file's
    with pytest.raises(ImageLoadError) as info:
        load_image(header, max_pixels=1000, check_size=refuse)
    assert info.value.kind == "too_large" and calls == [(30000, 20)]
    with pytest.raises(ImageLoadError, match=r"^<bytes>: odd$") as info:
        load_image(turned, check_size=lambda w, h: (_ for _ in ()).throw(ValueError("odd")))
    assert info.value.kind == "bad_shape"
    with pytest.raises(ZeroDivisionError):
        load_image(turned, check_size=lambda w, h: 1 / 0)


def test_load_image_without_check_size_leaves_pngs_alone(monkeypatch):
    # The chunk walk is for check_size and image_size only; plain load_image does not read twice.
    from seglens.io import decode as seglens_io

    monkeypatch.setattr(seglens_io, "_png_info", lambda fp: pytest.fail("metadata walked without check_size"))
    assert load_image(_encode(Image.new("RGB", (4, 3)), "PNG", exif=_exif(6))).size == (3, 4)


# ---------------------------------------------------------------- find_images


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")  # find_images never opens files
    return path


def _names(images: list[InputImage]) -> list[str]:
    return [image.name for image in images]


def test_find_images_folder_recursion_and_filtering(tmp_path):
    root = tmp_path / "photos"
    for rel in ["a/b.JPG", "c.png", "d.jpeg", "notes.txt", ".hidden.jpg", ".git/x.jpg", "e.Tiff"]:
        _touch(root / rel)
    images, problems = find_images([root])
    assert problems == []
    assert images == [
        InputImage(root / "a/b.JPG", "a/b"),
        InputImage(root / "c.png", "c"),
        InputImage(root / "d.jpeg", "d"),
        InputImage(root / "e.Tiff", "e"),
    ]


def test_find_images_explicit_file_any_extension_and_problems(tmp_path):
    scan = _touch(tmp_path / "scan.dat")
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "text/readme.txt")
    missing = str(tmp_path / "missing.jpg")
    no_match = str(tmp_path / "*.gif")
    images, problems = find_images([str(scan), missing, str(tmp_path / "empty"), str(tmp_path / "text"), no_match])
    assert images == [InputImage(scan, "scan")]
    extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
    assert problems == [
        (missing, "no such file or folder"),
        (str(tmp_path / "empty"), f"folder contains no images ({extensions})"),
        (str(tmp_path / "text"), f"folder contains no images ({extensions})"),
        (no_match, "pattern matched no image files"),
    ]


def test_find_images_glob(tmp_path):
    for rel in ["g/one.png", "g/two.JPG", "g/skip.txt", "g/sub/three.png"]:
        _touch(tmp_path / rel)
    images, problems = find_images([str(tmp_path / "g" / "*")])
    assert problems == []
    assert _names(images) == ["one", "two"]
    images, _ = find_images([str(tmp_path / "g" / "**" / "*.png")])
    assert [image.path for image in images] == [tmp_path / "g/one.png", tmp_path / "g/sub/three.png"]
    assert _names(images) == ["one", "three"]


def test_find_images_dedupes_same_file(tmp_path):
    cat = _touch(tmp_path / "pets/cat.jpg")
    images, problems = find_images([cat, tmp_path / "pets", str(tmp_path / "pets/../pets/cat.jpg")])
    assert problems == []
    assert images == [InputImage(cat, "cat")]


def test_find_images_collisions(tmp_path):
    x_cat = _touch(tmp_path / "x/cat.jpg")
    y_cat = _touch(tmp_path / "y/cat.jpg")
    y_png = _touch(tmp_path / "y/cat.png")
    images, _ = find_images([y_png, y_cat, x_cat])
    # all three are "cat": add the extension, then "-2" for the second cat_jpg in path order
    assert [(image.path, image.name) for image in images] == [
        (x_cat, "cat_jpg"),
        (y_cat, "cat_jpg-2"),
        (y_png, "cat_png"),
    ]
    images, _ = find_images([tmp_path / "y"])
    assert _names(images) == ["cat_jpg", "cat_png"]


def test_find_images_collisions_ignore_case(tmp_path):
    _touch(tmp_path / "f/Cat.jpg")
    _touch(tmp_path / "f/cat.png")
    images, _ = find_images([tmp_path / "f"])
    assert _names(images) == ["Cat_jpg", "cat_png"]


def test_find_images_sorted_by_path(tmp_path):
    b = _touch(tmp_path / "b.png")
    a = _touch(tmp_path / "a.png")
    images, _ = find_images([b, a])
    assert [image.path for image in images] == [a, b]


# ---------------------------------------------------------------- atomic writes


def test_atomic_open_writes_and_creates_parents(tmp_path):
    target = tmp_path / "new" / "dir" / "out.bin"
    with atomic_open(target) as f:
        f.write(b"data")
        assert [p.name.startswith(".out.bin.tmp-") for p in target.parent.iterdir()] == [True]
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_open_failure_keeps_old_content(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target, "w") as f:
            f.write("new, half written")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "absent.txt", "w"):
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_open_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb', 'w' or 'wt', got 'a'"):
        with atomic_open(tmp_path / "x", "a"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_save_mask_png_round_trip(tmp_path):
    labels = np.array([[0, 1, 2], [2, 1, 255]], dtype=np.uint8)
    palette = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0]], dtype=np.uint8)
    path = tmp_path / "masks" / "a.png"
    save_mask_png(path, labels, palette)
    with Image.open(path) as mask:
        assert (mask.format, mask.mode, mask.size) == ("PNG", "P", (3, 2))
        expected = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (768 - 9)
        assert mask.getpalette() == expected
        np.testing.assert_array_equal(np.asarray(mask), labels)
    full = np.random.default_rng(0).integers(0, 256, size=(256, 3), dtype=np.uint8)
    save_mask_png(path, labels, full)
    with Image.open(path) as mask:
        assert mask.getpalette() == full.reshape(-1).tolist()


def test_save_mask_png_bad_inputs(tmp_path):
    palette = np.zeros((2, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"labels must be a \(H, W\) uint8 array \(0..255\), got int64 values 0..300"):
        save_mask_png(tmp_path / "m.png", np.array([[0, 300]]), palette)
    with pytest.raises(ValueError, match=r"labels must be a \(H, W\) array of class indices, got shape \(2,\)"):
        save_mask_png(tmp_path / "m.png", np.zeros(2, dtype=np.uint8), palette)
    with pytest.raises(ValueError, match=r"palette must be a \(N<=256, 3\) array of RGB colours, got shape \(257, 3\)"):
        save_mask_png(tmp_path / "m.png", np.zeros((1, 1), dtype=np.uint8), np.zeros((257, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_save_image_formats(tmp_path, astronaut):
    save_image(tmp_path / "a.png", astronaut)
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "a.png")), astronaut)
    save_image(tmp_path / "a.JPG", Image.fromarray(astronaut), quality=95)
    with Image.open(tmp_path / "a.JPG") as image:
        assert (image.format, image.size) == ("JPEG", (512, 512))
    save_image(tmp_path / "a.webp", astronaut)
    assert _opened(tmp_path / "a.webp", "format") == "WEBP"
    # JPEG has no alpha: RGBA goes through to_rgb (over white)
    save_image(tmp_path / "t.jpg", Image.new("RGBA", (8, 8), (0, 0, 0, 0)))
    assert load_image(tmp_path / "t.jpg").getpixel((4, 4)) == (255, 255, 255)


def test_save_image_bad_inputs(tmp_path, astronaut):
    with pytest.raises(ValueError, match=r"a\.gif: unsupported extension \(use \.jpg, \.jpeg, \.png or \.webp\)"):
        save_image(tmp_path / "a.gif", astronaut)
    with pytest.raises(ValueError, match=r"image array must be \(H, W, 3\) uint8, got shape \(4, 4\)"):
        save_image(tmp_path / "a.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="quality must be between 1 and 100, got 0"):
        save_image(tmp_path / "a.jpg", astronaut, quality=0)


def test_write_json(tmp_path):
    path = tmp_path / "out" / "summary.json"
    write_json(path, {"name": "café", "miou": 0.5, "classes": [1, 2]})
    expected = '{\n  "name": "café",\n  "miou": 0.5,\n  "classes": [\n    1,\n    2\n  ]\n}\n'
    assert path.read_bytes() == expected.encode("utf-8")
    with pytest.raises(ValueError, match=r"bad\.json: Out of range float values .*use None instead of NaN"):
        write_json(tmp_path / "bad.json", {"miou": float("nan")})
    assert not (tmp_path / "bad.json").exists()


def test_write_csv(tmp_path):
    path = tmp_path / "per_class.csv"
    write_csv(path, [{"class": "cat", "iou": 0.5}, {"class": "dog, big"}], ["class", "iou"])
    assert path.read_bytes() == b'class,iou\r\ncat,0.5\r\n"dog, big",\r\n'


def test_load_errors_carry_a_kind(tmp_path):
    import pickle

    from PIL import Image as PILImage

    from seglens.io import ImageLoadError, load_image

    big = tmp_path / "big.png"
    PILImage.new("RGB", (20, 10)).save(big)
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    kinds = {}
    for path, limit in ((big, 199), (text, None), (empty, None)):
        with pytest.raises(ImageLoadError) as e:
            load_image(path, max_pixels=limit)
        kinds[path.name] = e.value.kind
    assert kinds == {"big.png": "too_large", "notes.jpg": "unsupported", "empty.png": "unreadable"}
    again = pickle.loads(pickle.dumps(ImageLoadError("x.png", "too big", "too_large")))
    assert (again.path, again.reason, again.kind) == ("x.png", "too big", "too_large")


# ---------------------------------------------------------------- http(s) URLs
# A real HTTP server on 127.0.0.1 (random port) in a background thread; nothing leaves the machine.

STREAM_TOTAL = 64 * 2**20  # what the streaming endpoints would send to a client that kept reading
SLOW = 0.5  # the short timeout used against the slow endpoints, seconds


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # needed for chunked responses

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass

    def _send(self, body: bytes, content_type: str = "image/jpeg", status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _stream(self, chunked: bool) -> None:
        """Up to STREAM_TOTAL bytes with no Content-Length; reports how many got out."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding" if chunked else "Connection", "chunked" if chunked else "close")
        self.end_headers()
        self.close_connection = True
        block, sent = b"\xff" * 2**16, 0
        try:
            while sent < STREAM_TOTAL:
                self.wfile.write(b"10000\r\n" + block + b"\r\n" if chunked else block)  # 0x10000 bytes
                sent += len(block)
        except OSError:  # the client hung up
            pass
        self.server.sent[self.path].put(sent)

    def _trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "10000")
        self.end_headers()
        try:
            for _ in range(200):  # one byte every 50 ms: never idle for a whole timeout
                self.wfile.write(b"\xff")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("User-Agent")))
        files, path = self.server.files, self.path.split("?")[0]
        if path == "/astronaut.jpg":
            self._send(files["jpeg"])
        elif path == "/astronaut.png":
            self._send(files["png"], "text/html")  # mislabelled: the bytes decide
        elif path == "/page.html":
            self._send(b"<!doctype html><title>cat</title><img src=cat.jpg>", "text/html; charset=utf-8")
        elif path == "/data.json":
            self._send(b'{"cat": 1}', "application/json")
        elif path in ("/missing.jpg", "/private.jpg", "/broken.jpg"):
            self.send_error({"/missing.jpg": 404, "/private.jpg": 403, "/broken.jpg": 500}[path])
        elif path == "/redirect":
            self._redirect("/astronaut.jpg")
        elif path == "/loop":
            self._redirect("/loop")
        elif path == "/to-ftp":
            self._redirect("ftp://127.0.0.1/astronaut.jpg")
        elif path == "/huge.jpg":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.close_connection = True
        elif path in ("/stream-chunked", "/stream-close"):
            self._stream(chunked=path == "/stream-chunked")
        elif path == "/slow.jpg":
            time.sleep(4 * SLOW)
            with contextlib.suppress(OSError):
                self._send(files["jpeg"])
        elif path == "/trickle.jpg":
            self._trickle()
        elif path == "/truncated.jpg":
            self._send(files["jpeg"][: len(files["jpeg"]) // 2])
        elif path == "/cut.jpg":
            self.send_response(200)
            self.send_header("Content-Length", str(len(files["jpeg"])))
            self.end_headers()
            self.wfile.write(files["jpeg"][:1000])
            self.close_connection = True
        elif path == "/empty.jpg":
            self._send(b"")
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def jpeg_bytes(astronaut) -> bytes:
    return _encode(Image.fromarray(astronaut), "JPEG", quality=90)


@pytest.fixture(scope="module")
def http_server(astronaut, jpeg_bytes):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.files = {"jpeg": jpeg_bytes, "png": _encode(Image.fromarray(astronaut), "PNG")}
    server.requests = []
    server.sent = {"/stream-chunked": queue.Queue(), "/stream-close": queue.Queue()}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def web(http_server, monkeypatch) -> str:
    """The test server's base URL, with any proxy settings out of the way."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return f"http://127.0.0.1:{http_server.server_address[1]}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load_error(url: str, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(url, **kwargs)
    assert info.value.path == url
    assert str(info.value) == f"{url}: {info.value.reason}"
    return info.value


def test_url_constants():
    assert DEFAULT_URL_MAX_BYTES == 52_428_800  # 50 * 1024 * 1024
    assert DEFAULT_URL_TIMEOUT == 30.0


@pytest.mark.parametrize(
    "text,expected",
    [
        ("http://example.com/cat.jpg", True),
        ("https://example.com/cat.jpg", True),
        ("HTTPS://EXAMPLE.COM/CAT.JPG", True),
        ("Http://example.com", True),
        ("https://", True),  # a URL for us; fetching it says what is wrong
        ("ftp://example.com/cat.jpg", False),
        ("file:///tmp/cat.jpg", False),
        ("data:image/png;base64,iVBORw0KGgo=", False),
        ("http:/example.com", False),
        ("httpx://example.com", False),
        (" https://example.com", False),
        ("cat.jpg", False),
        ("", False),
        (Path("https://example.com/cat.jpg"), False),  # a Path is always a file
        (b"https://example.com/cat.jpg", False),
        (None, False),
    ],
)
def test_is_url(text, expected):
    assert is_url(text) is expected


def test_fetch_and_load_url_match_the_file(web, http_server, jpeg_bytes, tmp_path):
    from seglens import __version__

    assert fetch_url(f"{web}/astronaut.jpg") == jpeg_bytes
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(jpeg_bytes)
    image = load_image(f"{web}/astronaut.jpg")
    assert (image.mode, image.size) == ("RGB", (512, 512))
    np.testing.assert_array_equal(np.asarray(image), np.asarray(load_image(path)))
    # spaces and non-ASCII are percent-encoded like a browser would; the fragment is not sent
    fetch_url(f"{web}/astronaut.jpg?q=a b é#top")
    assert http_server.requests[-1] == ("/astronaut.jpg?q=a%20b%20%C3%A9", f"seglens/{__version__}")


def test_image_size_and_check_size_of_a_url(web):
    assert image_size(f"{web}/astronaut.jpg") == (512, 512)

    def refuse(width, height):
        raise ValueError(f"image is {width}x{height}: no")

    with pytest.raises(ImageLoadError) as info:
        load_image(f"{web}/astronaut.jpg", check_size=refuse)
    assert (info.value.path, info.value.reason, info.value.kind) == (
        f"{web}/astronaut.jpg",
        "image is 512x512: no",
        "bad_shape",
    )


def test_load_url_follows_redirects(web, jpeg_bytes):
    np.testing.assert_array_equal(np.asarray(load_image(f"{web}/redirect")), np.asarray(load_image(jpeg_bytes)))


def test_load_url_content_type_is_not_trusted(web, astronaut):
    # a PNG the server calls text/html still loads: the decoder sniffs the bytes
    np.testing.assert_array_equal(np.asarray(load_image(f"{web}/astronaut.png")), astronaut)


@pytest.mark.parametrize(
    "path,said",
    [("/page.html", "text/html (a web page?)"), ("/data.json", "application/json")],
)
def test_load_url_not_an_image(web, path, said):
    error = _load_error(web + path)
    assert error.reason == f"not an image: the server sent {said}; link the image file itself"
    assert error.kind == "unsupported"


@pytest.mark.parametrize(
    "path,reason",
    [
        ("/missing.jpg", "HTTP 404 Not Found; check the URL"),
        ("/private.jpg", "HTTP 403 Forbidden; the image is not public (download it yourself)"),
        ("/broken.jpg", "HTTP 500 Internal Server Error; the server failed, try again later"),
        (
            "/loop",
            "HTTP 302 Found: too many redirects or no target; open the URL in a browser and use the final address",
        ),
    ],
)
def test_load_url_http_errors(web, path, reason):
    error = _load_error(web + path)
    assert (error.reason, error.kind) == (reason, "unreadable")


def test_load_url_redirect_to_another_scheme_is_refused(web):
    error = _load_error(f"{web}/to-ftp")
    reason = "redirected to ftp://127.0.0.1/astronaut.jpg, which is not http(s); link the image file itself"
    assert (error.reason, error.kind) == (reason, "unsupported")


def test_url_too_large_by_content_length(web):
    url = f"{web}/huge.jpg"  # says 10**9 bytes: refused from the headers, nothing is read
    message = r"/huge\.jpg: larger than 50 MB; download it yourself or raise the limit \(--url-max-mb\)$"
    with pytest.raises(ImageLoadError, match=message):
        fetch_url(url)
    error = _load_error(url, url_max_bytes=1000)
    assert error.reason == "larger than 1000 bytes; download it yourself or raise the limit (--url-max-mb)"
    assert error.kind == "too_large"


@pytest.mark.parametrize("path", ["/stream-chunked", "/stream-close"])
def test_url_too_large_while_streaming_stops_reading(web, http_server, path):
    # no Content-Length: the limit (100000 bytes = 97.7 KB) trips while reading, and the client
    # hangs up, so the server cannot push its 64 MB (at most the socket buffers' few MB get out)
    error = _load_error(web + path, url_max_bytes=100_000)
    assert (error.reason, error.kind) == (
        "larger than 97.7 KB; download it yourself or raise the limit (--url-max-mb)",
        "too_large",
    )
    assert http_server.sent[path].get(timeout=10) < STREAM_TOTAL


def test_url_timeout_without_response(web):
    start = time.monotonic()
    with pytest.raises(ImageLoadError, match=r"/slow\.jpg: no response within 0\.5 s; check the URL or try again$"):
        fetch_url(f"{web}/slow.jpg", timeout=SLOW)
    assert time.monotonic() - start < 3 * SLOW


def test_url_deadline_stops_a_trickling_server(web):
    # a byte every 50 ms never trips the 0.5 s socket timeout; the overall deadline does
    start = time.monotonic()
    error = _load_error(f"{web}/trickle.jpg", url_timeout=SLOW)
    assert error.reason == "download not finished within 0.5 s (server too slow); try again or download it yourself"
    assert time.monotonic() - start < 3 * SLOW


def test_url_truncated_and_cut_off(web, jpeg_bytes):
    assert _load_error(f"{web}/truncated.jpg").reason == TRUNCATED  # the decoder's check, as for files
    error = _load_error(f"{web}/cut.jpg")
    assert error.reason == f"connection closed after 1000 of {len(jpeg_bytes)} bytes; try again"
    assert _load_error(f"{web}/empty.jpg").reason == "the server sent an empty response (0 bytes); check the URL"


def test_url_connection_refused():
    url = f"http://127.0.0.1:{_free_port()}/cat.jpg"
    error = _load_error(url)
    assert error.reason == "cannot connect: connection refused; check the URL (host and port)"
    assert error.kind == "unreadable"


def test_url_host_not_found(monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # no real DNS lookup
    error = _load_error("https://no-such-host.invalid/cat.jpg")
    assert error.reason == "cannot connect: host not found (Name or service not known); check the URL and the network"


def test_url_tls_error():
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_in_plain_http() -> None:  # what an http-only server does to a TLS handshake
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            time.sleep(0.2)  # keep the connection open until the client has read it

    thread = threading.Thread(target=answer_in_plain_http, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/cat.jpg"
        hint = r"check the URL \(https:// for a plain http server\?\)"
        pattern = rf"^https://127\.0\.0\.1:\d+/cat\.jpg: TLS error \(.+\); {hint}$"
        with pytest.raises(ImageLoadError, match=pattern):
            fetch_url(url, timeout=5)
    finally:
        thread.join(5)
        listener.close()


def test_url_argument_checks():
    with pytest.raises(ValueError, match=r"expects an http:// or https:// URL, got 'ftp://example\.com/a\.jpg'"):
        fetch_url("ftp://example.com/a.jpg")
    with pytest.raises(ValueError, match=r"^max_bytes must be a positive int, got 0$"):
        fetch_url("https://example.com/a.jpg", max_bytes=0)
    with pytest.raises(ValueError, match=r"^url_timeout must be a positive number of seconds, got 0$"):
        load_image("https://example.com/a.jpg", url_timeout=0)
    with pytest.raises(ValueError, match=r"^url_max_bytes must be a positive int, got 1\.5$"):
        load_image("https://example.com/a.jpg", url_max_bytes=1.5)


def test_load_image_other_url_schemes():
    for url in ("ftp://example.com/cat.jpg", "file:///nonexistent/cat.jpg", "data:image/png;base64,iVBORw0KGgo="):
        error = _load_error(url)
        assert (error.reason, error.kind) == ("unsupported URL scheme; use http(s) or a local path", "unsupported")


def test_find_images_urls_names_order_and_dedup(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("find_images must not touch the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    cat = _touch(tmp_path / "cat.png")
    dog = _touch(tmp_path / "a" / "dog.jpg")
    inputs = [
        "https://example.com/b/cat.jpg?x=1",
        str(cat),
        "HTTPS://EXAMPLE.COM/a/cat.jpg",
        "https://example.com/",
        "https://Example.com/b/cat.jpg?x=1#top",  # the first URL again: listed once
        "http://h.test/photos/caf%C3%A9%20au%20lait.PNG",
        "http://h.test/a%2F..%2F..%2Fetc%2Fpasswd.jpg",
        "http://h.test/x%0Ay%3Az.jpeg",
        f"http://h.test/{'z' * 300}.jpg",
        "http://h.test/..",
        "ftp://example.com/cat.jpg",
        str(dog),
    ]
    images, problems = find_images(inputs)
    assert [(image.path, image.name) for image in images] == [
        (dog, "dog"),  # files first, sorted by path, then URLs in input order
        (cat, "cat_png"),  # three "cat"s: the extension is added, then "-2"
        ("https://example.com/b/cat.jpg?x=1", "cat_jpg"),
        ("HTTPS://EXAMPLE.COM/a/cat.jpg", "cat_jpg-2"),
        ("https://example.com/", "example.com"),  # no file name: the host
        ("http://h.test/photos/caf%C3%A9%20au%20lait.PNG", "café au lait"),
        ("http://h.test/a%2F..%2F..%2Fetc%2Fpasswd.jpg", "a_._._etc_passwd"),  # no "/", no ".."
        ("http://h.test/x%0Ay%3Az.jpeg", "x_y_z"),  # control characters and ":" replaced
        (f"http://h.test/{'z' * 300}.jpg", "z" * 100),
        ("http://h.test/..", "h.test"),
    ]
    assert problems == [("ftp://example.com/cat.jpg", "unsupported URL scheme; use http(s) or a local path")]
    assert [(image.is_url, image.label) for image in images[1:3]] == [
        (False, str(cat)),
        (True, "https://example.com/b/cat.jpg?x=1"),
    ]


def test_find_images_other_schemes_and_odd_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "data:cat.png")  # a real file of that name wins over the scheme check
    images, problems = find_images(["data:cat.png", "file:///nope.jpg", "data:image/png;base64,AAAA", "ftp://h/*.jpg"])
    assert images == [InputImage(Path("data:cat.png"), "data:cat")]
    reason = "unsupported URL scheme; use http(s) or a local path"
    assert problems == [("file:///nope.jpg", reason), ("data:image/png;base64,AAAA", reason), ("ftp://h/*.jpg", reason)]
