import io
import struct

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae.data import decoding
from tfvitmae.data.decoding import decode_image, image_pixels, load_images, match_channels
from tfvitmae.data.folders import find_unreadable


def encoded(image, fmt, **options):
    """`image` (a uint8 array or a PIL image) encoded by Pillow as `fmt`."""
    from PIL import Image

    buffer = io.BytesIO()
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    picture.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt, mode, options",
    [
        ("PNG", "RGB", {}),
        ("PNG", "L", {}),
        ("GIF", "P", {}),
        ("BMP", "RGB", {}),
        ("BMP", "L", {}),
        ("JPEG", "RGB", {}),
        ("WEBP", "RGB", {}),  # lossy: a VP8 chunk
        ("WEBP", "RGB", {"lossless": True}),  # VP8L
        ("WEBP", "RGBA", {}),  # with alpha: VP8X
    ],
)
def test_image_pixels_reads_every_formats_header(fmt, mode, options):
    from PIL import Image

    array = np.random.default_rng(0).integers(0, 256, size=(37, 53, 4), dtype=np.uint8)
    picture = Image.fromarray(array[..., : 4 if mode == "RGBA" else 3]).convert(mode)
    contents = encoded(picture, fmt, **options)
    assert int(image_pixels(contents)) == 37 * 53
    assert decode_image(contents).shape == (37, 53, 3)


def test_image_pixels_of_other_bytes_is_zero():
    assert int(image_pixels(b"not an image")) == int(image_pixels(b"")) == 0


def bomb(side=9500):
    """A real PNG of zeros just over the default budget: 88 KB on disk, 90M pixels."""
    from PIL import Image

    return encoded(Image.new("L", (side, side)), "PNG")


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    contents = bomb()
    assert len(contents) < 200_000 and int(image_pixels(contents)) == 9500**2
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than the pixel budget"):
        decode_image(contents)
    path = tmp_path / "bomb.png"
    path.write_bytes(contents)
    with pytest.raises(
        ValueError, match=r"Cannot read .*bomb.png as an image: the image is larger"
    ):
        load_images([str(path)])
    # A smaller budget refuses smaller images; a larger one decodes the bomb.
    small = encoded(np.zeros((40, 40, 3), np.uint8), "PNG")
    with pytest.raises(tf.errors.InvalidArgumentError, match="budget of 1,000 pixels"):
        decode_image(small, max_pixels=1000)
    monkeypatch.setattr(decoding, "MAX_IMAGE_PIXELS", 10**8)
    assert decode_image(contents, 1).shape == (9500, 9500, 1)


@pytest.mark.parametrize(
    "contents, pattern",
    [
        (b"", r"Cannot read .*x.img as an image: Input is empty\.?$"),
        (b"hello", r"as an image: Unknown image file format"),
        (b"\xff\x0a" + bytes(40), r"JPEG XL images are not read: their size cannot be checked"),
        (b"\0\0\0\x0cJXL \r\n\x87\n" + bytes(40), r"JPEG XL images are not read"),
    ],
)
def test_undecodable_files_are_named_in_plain_words(contents, pattern, tmp_path):
    """No TensorFlow internals ({{function_node ...}}, [Op:...]) in the message."""
    path = tmp_path / "x.img"
    path.write_bytes(contents)
    with pytest.raises(ValueError, match=pattern) as error:
        load_images([str(path)])
    assert "function_node" not in str(error.value) and "[Op:" not in str(error.value)


# ------------------------------------------------------ read as Pillow shows it
def pillow(contents, mode):
    """What Pillow shows: `contents` opened, turned by its EXIF orientation
    (as transformers' `load_image` does) and converted to `mode`."""
    from PIL import Image, ImageOps

    picture = ImageOps.exif_transpose(Image.open(io.BytesIO(contents)))
    array = np.asarray(picture.convert(mode))
    return array[..., None] if array.ndim == 2 else array


def random_rgb(height=9, width=13, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def top_down(bmp):
    """A Pillow BMP (bottom-up rows) rewritten top-down: rows reversed, height negated."""
    start, width, height, bits = (
        struct.unpack_from("<I", bmp, 10)[0],
        *struct.unpack_from("<iiH", bmp, 18)[:2],
        struct.unpack_from("<H", bmp, 28)[0],
    )
    stride = (width * bits + 31) // 32 * 4
    rows = [bmp[start + i * stride : start + (i + 1) * stride] for i in range(height)]
    head = bytearray(bmp[:start])
    struct.pack_into("<i", head, 22, -height)
    return bytes(head) + b"".join(reversed(rows))


def core_bmp(indices, palette):
    """An OS/2 BMP (12-byte BITMAPCOREHEADER, 3-byte colours), 8 bits a pixel."""
    height, width = indices.shape
    stride = (width + 3) // 4 * 4
    table = b"".join(bytes(color[::-1]) for color in palette)
    start = 14 + 12 + len(table)
    rows = b"".join(bytes(row) + b"\0" * (stride - width) for row in indices[::-1].astype(np.uint8))
    return (
        b"BM"
        + struct.pack("<IHHI", start + len(rows), 0, 0, start)
        + struct.pack("<IHHHH", 12, width, height, 1, 8)
        + table
        + rows
    )


def transformed(picture):
    """Every way Pillow writes a picture that TensorFlow alone misreads or refuses."""
    rgb = np.asarray(picture)
    return {
        "palette BMP, 8 bits": encoded(picture.convert("P"), "BMP"),
        "palette BMP, 4 bits": encoded(picture.quantize(16), "BMP"),
        "palette BMP, 1 bit": encoded(picture.convert("1"), "BMP"),
        "palette BMP, top-down": top_down(encoded(picture.convert("P"), "BMP")),
        "grayscale BMP": encoded(picture.convert("L"), "BMP"),
        "RGBA BMP": encoded(picture.convert("RGBA"), "BMP"),
        "GIF": encoded(picture, "GIF"),
        "palette PNG": encoded(picture.convert("P"), "PNG"),
        "gray+alpha PNG": encoded(picture.convert("LA"), "PNG"),
        "RGBA WebP": encoded(
            np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]), "WEBP", lossless=True
        ),
    }


@pytest.mark.parametrize("num_channels, mode", [(3, "RGB"), (1, "L")])
def test_every_format_reads_as_pillow_shows_it(num_channels, mode):
    """Palette BMPs were read as their indices or refused, GIFs and BMPs refused
    for one-channel models, WebP with alpha refused for three."""
    from PIL import Image

    for name, contents in transformed(Image.fromarray(random_rgb())).items():
        np.testing.assert_array_equal(
            decode_image(contents, num_channels), pillow(contents, mode), err_msg=name
        )


def test_an_os2_bmp_reads_through_its_three_byte_colours():
    indices = np.random.default_rng(1).integers(0, 4, (5, 6))
    palette = [(255, 0, 0), (0, 128, 0), (10, 20, 250), (7, 7, 7)]
    np.testing.assert_array_equal(
        decode_image(core_bmp(indices, palette)), np.array(palette)[indices]
    )


def test_cmyk_and_gray_jpegs_read_in_every_channel_count():
    from PIL import Image

    flat = Image.new("RGB", (16, 16), (200, 120, 40))
    for picture in (flat.convert("CMYK"), flat.convert("L")):
        contents = encoded(picture, "JPEG", quality=95)
        for num_channels, mode in ((3, "RGB"), (1, "L")):
            ours = decode_image(contents, num_channels).numpy().astype(int)
            assert ours.shape == (16, 16, num_channels)
            assert np.abs(ours - pillow(contents, mode)).max() <= 3  # two JPEG decoders


def exif(orientation):
    from PIL import Image

    tags = Image.Exif()
    tags[0x0112] = orientation
    tags[0x010F] = "tfvitmae"  # Make: the orientation is not the only tag
    return tags.tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(orientation):
    from PIL import Image

    picture = Image.fromarray(random_rgb())
    for fmt, options in (("PNG", {}), ("WEBP", {"lossless": True})):
        contents = encoded(picture, fmt, exif=exif(orientation), **options)
        for num_channels, mode in ((3, "RGB"), (1, "L")):
            np.testing.assert_array_equal(
                decode_image(contents, num_channels), pillow(contents, mode), err_msg=fmt
            )
    # A JPEG: the same pixels as the file without the tag, turned by Pillow.
    stored = decode_image(encoded(picture, "JPEG", quality=90)).numpy()
    turned = decode_image(encoded(picture, "JPEG", quality=90, exif=exif(orientation)))
    expected = Image.fromarray(stored)
    expected.getexif()[0x0112] = orientation
    from PIL import ImageOps

    np.testing.assert_array_equal(turned, np.asarray(ImageOps.exif_transpose(expected)))


def test_exif_orientation_in_a_served_function_and_without_a_tag():
    picture = random_rgb()
    plain = encoded(picture, "JPEG")
    graph = tf.function(lambda contents: decode_image(contents, 3))
    assert graph(plain).shape == (9, 13, 3)
    assert graph(encoded(picture, "JPEG", exif=exif(6))).shape == (13, 9, 3)
    # Bytes that look like an EXIF marker but are no APP1 segment change nothing.
    assert decode_image(plain + b"Exif\0\0MM\0*\0\0\0\x08").shape == (9, 13, 3)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda b: b[:30] + struct.pack("<I", 1) + b[34:], "run-length encoded BMP images"),
        (lambda b: b[:-10], "the BMP file is truncated"),
    ],
)
def test_bmps_that_cannot_be_read_say_why(change, pattern, tmp_path):
    from PIL import Image

    path = tmp_path / "odd.bmp"
    path.write_bytes(change(encoded(Image.fromarray(random_rgb()).convert("P"), "BMP")))
    with pytest.raises(ValueError, match=rf"Cannot read .*odd.bmp as an image: {pattern}"):
        load_images([str(path)])
    assert find_unreadable([str(path)]) == [str(path)]


def test_a_folder_check_reads_what_a_one_channel_model_reads(tmp_path):
    """GIF, BMP and CMYK JPEG files were skipped as broken for one-channel models."""
    from PIL import Image

    picture = Image.fromarray(random_rgb())
    files = transformed(picture) | {"CMYK JPEG": encoded(picture.convert("CMYK"), "JPEG")}
    paths = []
    for i, contents in enumerate(files.values()):
        paths.append(str(tmp_path / f"{i}.img"))
        (tmp_path / f"{i}.img").write_bytes(contents)
    assert find_unreadable(paths, num_channels=1) == []
    assert find_unreadable(paths, num_channels=3) == []


def test_arrays_turn_gray_by_pillows_luma():
    from PIL import Image

    rgb = random_rgb(40, 50)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
    np.testing.assert_array_equal(match_channels(rgb, 1), gray)
    np.testing.assert_allclose(match_channels(rgb.astype("float32"), 1), gray, atol=0.51)
    with pytest.raises(ValueError, match="decode to 1, 3 or 4 channels, received num_channels=2"):
        decode_image(encoded(rgb, "PNG"), 2)
