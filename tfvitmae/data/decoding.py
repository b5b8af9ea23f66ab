"""Encoded images and arrays to uint8 pixels, read as a viewer shows them.

One decoder for every path (Python calls, `tf.data`, folder checks and
SavedModel signatures), built from TensorFlow ops so that it runs in all of
them. On top of `tf.io.decode_image` it:

- refuses images over a pixel budget from their header, before decoding: a
  GIF's size is the larger of its screen and its first frame, found by walking
  its blocks, and only that frame is decoded (TensorFlow's GIF decoder would
  decode every frame); animated WebP images are refused (TensorFlow 2.21's
  decoder for them corrupts memory);
- reads BMPs of 1, 2, 4 and 8 bits a pixel through their colour table
  (TensorFlow returns 8-bit ones as palette indices and refuses the others);
- turns upright the JPEG, PNG and WebP images whose EXIF orientation says so,
  as `transformers.image_utils.load_image` does (`PIL.ImageOps.exif_transpose`);
- gives every format in every channel count: alpha is dropped and RGB becomes
  gray by ITU-R 601 luma, both as Pillow's `convert` does.
"""

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..utils.backend import tensorflow
from ..utils.checks import DEFAULT_MAX_IMAGE_PIXELS
from ..utils.types import TensorLike

if TYPE_CHECKING:
    import tensorflow as tf
else:
    tf = tensorflow("Decoding images")

__all__ = [
    "MAX_IMAGE_PIXELS",
    "decode_image",
    "image_pixels",
    "image_problem",
    "load_images",
    "match_channels",
    "tf_error_reason",
]

# The most pixels an encoded image may have to be decoded (PIL's own
# `Image.MAX_IMAGE_PIXELS`): a 23000x23000 PNG of zeros is 0.5 MB on disk and
# gigabytes decoded. Raise it here, before decoding or exporting, for larger images.
MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS

# Pillow's integer luma, L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 (ITU-R 601).
_LUMA = (19595, 38470, 7471)
_HEADER_BYTES = 64
_EXIF_ENTRIES = 64  # read from the first IFD; orientation (0x0112) sorts early
_JPEG_SEGMENTS = 4  # EXIF's APP1 follows the start, at most after JFIF's APP0 and a few
_JPEG_XL_CONTAINER = b"\0\0\0\x0cJXL \r\n\x87\n"
_SIDE = 2**31  # sides are clipped here, so that no product of two overflows int64
_GIF_WINDOW = 2**14  # bytes one step of the GIF block walk reads


# ---------------------------------------------------------------- bytes
def _slice(contents: tf.Tensor, start: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """Bytes `start:start + length` of `contents` (uint8; shorter at its end)."""
    start, length = tf.cast(start, tf.int32), tf.cast(length, tf.int32)
    return tf.io.decode_raw(tf.strings.substr(contents, start, length), tf.uint8)


def _bytes_at(contents: tf.Tensor, start: TensorLike, length: int) -> tf.Tensor:
    """`length` bytes of `contents` from `start`, as int64, zeros past its end."""
    start = tf.clip_by_value(tf.cast(start, tf.int32), 0, tf.strings.length(contents))
    chunk = tf.strings.substr(contents, start, length) + b"\0" * length
    raw = tf.io.decode_raw(tf.strings.substr(chunk, 0, length), tf.uint8)
    return tf.cast(tf.reshape(raw, (length,)), tf.int64)


def _uint(data: tf.Tensor, start: int, length: int, big_endian: TensorLike = False) -> tf.Tensor:
    """The unsigned integer of `length` bytes at `start` of `data` (int64);
    `big_endian` may be a boolean tensor."""
    weights = [256**i for i in range(length)]
    field = data[..., start : start + length]
    if isinstance(big_endian, bool):
        return tf.reduce_sum(field * (weights[::-1] if big_endian else weights), axis=-1)
    little = tf.reduce_sum(field * weights, axis=-1)
    return tf.where(big_endian, tf.reduce_sum(field * weights[::-1], axis=-1), little)


def _starts_with(header: tf.Tensor, magic: bytes, at: int = 0) -> tf.Tensor:
    return tf.reduce_all(tf.equal(header[at : at + len(magic)], list(magic)))


# ---------------------------------------------------------------- sizes
def _bmp_fields(header: tf.Tensor) -> dict[str, tf.Tensor]:
    # BITMAPCOREHEADER (12 bytes) has 16-bit sizes and 3-byte colours; the
    # others signed 32-bit sizes, where a negative height means rows stored
    # top-down, and 4-byte colours.
    core = tf.equal(_uint(header, 14, 4), 12)
    height = tf.where(core, _uint(header, 20, 2), _uint(header, 22, 4))
    top_down = height >= 2**31
    return dict(
        core=core,
        width=tf.where(core, _uint(header, 18, 2), _uint(header, 18, 4)),
        height=tf.where(top_down, 2**32 - height, height),
        top_down=top_down,
        bits=tf.where(core, _uint(header, 24, 2), _uint(header, 28, 2)),
        compression=tf.where(core, tf.constant(0, tf.int64), _uint(header, 30, 4)),
        colors=tf.where(core, tf.constant(0, tf.int64), _uint(header, 46, 4)),
    )


def _webp_size(header: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Width and height of a WebP: its VP8X canvas, or its one VP8/VP8L frame."""
    bits = _uint(header, 21, 4)  # VP8L: 14-bit width - 1, then 14-bit height - 1
    extended, lossless = _starts_with(header, b"VP8X", 12), _starts_with(header, b"VP8L", 12)
    width = tf.where(
        extended,
        _uint(header, 24, 3) + 1,
        tf.where(
            lossless,
            tf.bitwise.bitwise_and(bits, 0x3FFF) + 1,
            tf.bitwise.bitwise_and(_uint(header, 26, 2), 0x3FFF),  # VP8
        ),
    )
    height = tf.where(
        extended,
        _uint(header, 27, 3) + 1,
        tf.where(
            lossless,
            tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1,
            tf.bitwise.bitwise_and(_uint(header, 28, 2), 0x3FFF),
        ),
    )
    return width, height


def _is_animated_webp(header: tf.Tensor) -> tf.Tensor:
    """A WebP whose VP8X header flags an animation (libwebp's test for one)."""
    return (
        _is_webp(header)
        & _starts_with(header, b"VP8X", 12)
        & (tf.bitwise.bitwise_and(header[20], 0x02) > 0)
    )


def _is_jpeg(header: tf.Tensor) -> tf.Tensor:
    return _starts_with(header, b"\xff\xd8\xff")


def _is_png(header: tf.Tensor) -> tf.Tensor:
    return _starts_with(header, b"\x89PNG\r\n\x1a\n")


def _is_gif(header: tf.Tensor) -> tf.Tensor:
    return tf.logical_or(_starts_with(header, b"GIF87a"), _starts_with(header, b"GIF89a"))


def _is_webp(header: tf.Tensor) -> tf.Tensor:
    return tf.logical_and(_starts_with(header, b"RIFF"), _starts_with(header, b"WEBP", 8))


def _gif_table(flags: tf.Tensor) -> tf.Tensor:
    """Bytes of the colour table that a GIF screen's or image's `flags` announce."""
    size = tf.bitwise.left_shift(tf.constant(3, tf.int64), tf.bitwise.bitwise_and(flags, 7) + 1)
    return tf.where(tf.bitwise.bitwise_and(flags, 0x80) > 0, size, 0)


def _gif_stop(contents: tf.Tensor, start: TensorLike, state: int) -> tf.Tensor:
    """Where a walk of GIF blocks from `start` stops (int64), in one of two states.

    `state` 0 is between blocks: extensions (0x21, a label, then sub-blocks)
    are skipped, and the walk stops at any other byte, such as an image
    (0x2C) or the trailer (0x3B). `state` 2 is in an image's data
    sub-blocks, and the walk stops at their terminator (a zero size).
    Sub-blocks are a chain (a size byte, then that many bytes): the walk
    reads `_GIF_WINDOW` bytes a step and follows the chain through them by
    pointer doubling, so that a file of a million one-byte sub-blocks costs
    a few vectorized steps, not a million loop turns. Every step but the last
    moves on by at least a window, so the steps are bounded by the file's
    length; past its end, the walk stops (and reads zeros there).
    """
    window = _GIF_WINDOW
    length = tf.cast(tf.strings.length(contents), tf.int64)
    offsets = tf.range(window, dtype=tf.int64)

    def step(at, state, _):
        size = _bytes_at(contents, at, window)
        sub, ends = offsets + 1 + size, tf.equal(size, 0)
        # Each node (state, offset) leads to one; state 1 is in an extension's
        # sub-blocks. Nodes that lead to themselves are where the walk stops.
        extension = tf.equal(size, 0x21)
        to_offset = tf.concat(
            [tf.where(extension, offsets + 2, offsets), sub, tf.where(ends, offsets, sub)], 0
        )
        to_state = tf.concat(
            [tf.where(extension, 1, 0), tf.where(ends, 0, 1), tf.fill([window], 2)], 0
        )
        to_state = tf.cast(to_state, tf.int64)
        nodes = tf.range(3 * window, dtype=tf.int64)
        leaves = to_offset >= window
        follow = tf.where(leaves, nodes, to_state * window + to_offset)
        for _ in range(window.bit_length()):  # a chain in a window is shorter than it
            follow = tf.gather(follow, follow)
        reached = follow[state * window]
        moves_on = leaves[reached]
        return (
            tf.where(moves_on, at + to_offset[reached], at + reached % window),
            tf.where(moves_on, to_state[reached], reached // window),
            tf.logical_not(moves_on),
        )

    at, _, _ = tf.while_loop(
        lambda at, state, stopped: tf.logical_and(tf.logical_not(stopped), at < length),
        step,
        (tf.cast(start, tf.int64), tf.constant(state, tf.int64), tf.constant(False)),
        maximum_iterations=tf.cast(length // window + 2, tf.int32),
    )
    return at


def _gif_frame(contents: tf.Tensor) -> dict[str, tf.Tensor]:
    """The first image of a GIF: its descriptor's `left`, `top`, `width` and
    `height`, and `end`, the position just past its data (-1 when there is no
    whole first image: no image before the trailer, or a truncated file)."""
    length = tf.cast(tf.strings.length(contents), tf.int64)
    screen = _bytes_at(contents, 0, 13)
    found = _gif_stop(contents, 13 + _gif_table(screen[10]), 0)
    descriptor = _bytes_at(contents, found, 10)
    is_image = tf.logical_and(tf.equal(descriptor[0], 0x2C), found + 10 < length)
    data = found + 10 + _gif_table(descriptor[9]) + 1  # after LZW's minimum code size
    end = tf.cond(
        is_image, lambda: _gif_stop(contents, data, 2) + 1, lambda: tf.constant(-1, tf.int64)
    )
    return dict(
        left=_uint(descriptor, 1, 2),
        top=_uint(descriptor, 3, 2),
        width=_uint(descriptor, 5, 2),
        height=_uint(descriptor, 7, 2),
        end=tf.where(end <= length, end, -1),
    )


def _first_gif_frame(contents: tf.Tensor, frame: dict[str, tf.Tensor]) -> tf.Tensor:
    """A GIF of the blocks of `contents` up to its first image, then the trailer."""
    return tf.strings.substr(contents, 0, tf.cast(frame["end"], tf.int32)) + b";"


def _size(
    contents: tf.Tensor, header: tf.Tensor, bmp: dict[str, tf.Tensor]
) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
    """Width and height an image's header claims (int64; -1 and 1 for JPEG XL,
    whose size is not read here; 0 for other bytes), and its first GIF frame.

    A GIF's size spans its screen and its first frame (TensorFlow decodes a
    frame larger than the screen at the frame's size)."""
    width, height = tf.cond(  # the one format whose size needs more than the first bytes
        _is_jpeg(header),
        lambda: tuple(tf.unstack(tf.cast(tf.image.extract_jpeg_shape(contents)[1::-1], tf.int64))),
        lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
    )
    none = dict.fromkeys(("left", "top", "width", "height", "end"), tf.constant(-1, tf.int64))
    gif = tf.cond(_is_gif(header), lambda: _gif_frame(contents), lambda: none)
    formats = (
        (_is_png(header), (_uint(header, 16, 4, True), _uint(header, 20, 4, True))),
        (
            _is_gif(header),
            (
                tf.maximum(_uint(header, 6, 2), gif["left"] + gif["width"]),
                tf.maximum(_uint(header, 8, 2), gif["top"] + gif["height"]),
            ),
        ),
        (_starts_with(header, b"BM"), (bmp["width"], bmp["height"])),
        (_is_webp(header), _webp_size(header)),
        (
            tf.logical_or(
                _starts_with(header, b"\xff\x0a"), _starts_with(header, _JPEG_XL_CONTAINER)
            ),
            (tf.constant(-1, tf.int64), tf.constant(1, tf.int64)),
        ),
    )
    for is_format, (format_width, format_height) in formats:  # leading bytes exclude one another
        width = tf.where(is_format, format_width, width)
        height = tf.where(is_format, format_height, height)
    return tf.minimum(width, _SIDE), tf.minimum(height, _SIDE), gif


def image_pixels(contents: TensorLike) -> tf.Tensor:
    """Height x width of an encoded JPEG, PNG, GIF, BMP or WebP image, read
    from its header without decoding it (int64; -1 for JPEG XL, whose size
    is not read here; 0 for other bytes, which do not decode). A GIF's spans
    its screen and its first frame, the one frame `decode_image` decodes."""
    contents = tf.convert_to_tensor(contents, tf.string)
    header = _bytes_at(contents, 0, _HEADER_BYTES)
    width, height, _ = _size(contents, header, _bmp_fields(header))
    return width * height


def _budget_message(budget: int) -> str:
    return (
        f"more than the pixel budget of {budget:,} pixels (tfvitmae.data.decoding.MAX_IMAGE_PIXELS)"
    )


def image_problem(contents: TensorLike, *, max_pixels: int | None = None) -> tf.Tensor:
    """Why encoded bytes that failed to decode did so, as far as their header
    tells (a string tensor; `decode_image` refuses the same): not an image of
    a format read here, JPEG XL, an animated WebP, over the pixel budget, or
    else broken data."""
    budget = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    contents = tf.convert_to_tensor(contents, tf.string)
    pixels = image_pixels(contents)
    return tf.where(
        tf.equal(pixels, 0),
        "is not a JPEG, PNG, GIF, BMP or WebP image",
        tf.where(
            pixels < 0,
            "is a JPEG XL image, which is not read; convert it to PNG or JPEG",
            tf.where(
                pixels > budget,
                tf.strings.format(f"has {{}} pixels, {_budget_message(budget)}", [pixels]),
                tf.where(
                    _is_animated_webp(_bytes_at(contents, 0, _HEADER_BYTES)),
                    _ANIMATED_WEBP,
                    "does not decode: its data is broken or truncated",
                ),
            ),
        ),
    )


_ANIMATED_WEBP = (
    "is an animated WebP image, which is not read (TensorFlow's decoder for them "
    "corrupts memory); convert its first frame to PNG"
)


# ---------------------------------------------------------------- formats
def _palette_bmp(contents: tf.Tensor, header: tf.Tensor, bmp: dict[str, tf.Tensor]) -> tf.Tensor:
    """A BMP of 1, 2, 4 or 8 bits a pixel, through its colour table -> uint8 RGB."""
    bits, width, height = bmp["bits"], bmp["width"], bmp["height"]
    most = tf.bitwise.left_shift(tf.constant(1, tf.int64), bits)  # colours the bits index
    entry = tf.where(bmp["core"], tf.constant(3, tf.int64), tf.constant(4, tf.int64))
    table_start = 14 + _uint(header, 14, 4)
    data_start = _uint(header, 10, 4)
    # No count (always so in OS/2 files): as many as the bits index, or fit before the pixels.
    unlisted = tf.maximum(tf.minimum(most, (data_start - table_start) // entry), 0)
    colors = tf.where(bmp["colors"] == 0, unlisted, bmp["colors"])
    stride = (width * bits + 31) // 32 * 4  # rows are padded to 4 bytes
    checks = [
        tf.debugging.assert_equal(
            bmp["compression"],
            tf.constant(0, tf.int64),
            message="run-length encoded BMP images are not read; convert them to PNG",
        ),
        tf.debugging.assert_equal(
            tf.reduce_any(tf.equal(bits, [1, 2, 4, 8])),
            True,
            message="a paletted BMP must have 1, 2, 4 or 8 bits a pixel",
        ),
        tf.debugging.assert_equal(
            tf.logical_and(width > 0, height > 0), True, message="the BMP image has no pixels"
        ),
        tf.debugging.assert_less_equal(
            colors,
            most,
            message="the BMP's colour table has more colours than its pixels can index",
        ),
        tf.debugging.assert_less_equal(
            tf.maximum(data_start + stride * height, table_start + colors * entry),
            tf.cast(tf.strings.length(contents), tf.int64),
            message="the BMP file is truncated",
        ),
    ]
    with tf.control_dependencies(checks):
        table = _slice(contents, table_start, colors * entry)
    table = tf.reverse(tf.reshape(table, (-1, entry))[:, :3], [1])  # BGR(x) -> RGB
    table = tf.pad(table, [[0, 256 - tf.shape(table)[0]], [0, 0]])  # unlisted indices: black
    rows = _slice(contents, data_start, stride * height)
    rows = tf.cast(tf.reshape(rows, (height, stride)), tf.int64)
    per_byte = 8 // bits  # pixels a byte, the first in the high bits
    shifts = 8 - bits * (tf.range(per_byte) + 1)
    indices = tf.bitwise.bitwise_and(tf.bitwise.right_shift(rows[..., None], shifts), most - 1)
    indices = tf.reshape(indices, (height, stride * per_byte))[:, :width]
    image = tf.gather(table, indices)
    return tf.cond(bmp["top_down"], lambda: image, lambda: tf.reverse(image, [0]))


def _tiff_orientation(contents: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
    """The Orientation (tag 0x0112) of the TIFF structure at `start`; 1 if none."""
    head = _bytes_at(contents, start, 8)
    big = _starts_with(head, b"MM\0*")
    valid = tf.logical_or(big, _starts_with(head, b"II*\0"))
    block = _bytes_at(contents, start + _uint(head, 4, 4, big), 2 + 12 * _EXIF_ENTRIES)
    entries = tf.reshape(block[2:], (_EXIF_ENTRIES, 12))
    found = tf.logical_and(
        tf.equal(_uint(entries, 0, 2, big), 0x0112),
        tf.range(_EXIF_ENTRIES, dtype=tf.int64) < _uint(block, 0, 2, big),
    )
    value = tf.reduce_max(tf.where(found, _uint(entries, 8, 2, big), 0))
    return tf.where(tf.logical_and(valid, (value >= 1) & (value <= 8)), value, 1)


def _jpeg_exif(contents: tf.Tensor) -> tf.Tensor:
    """Where the TIFF structure of a JPEG's EXIF (an APP1 segment opening
    with "Exif\\0\\0") starts, among its first segments; -1 if none."""
    at, found = tf.constant(2, tf.int64), tf.constant(-1, tf.int64)  # after SOI
    for _ in range(_JPEG_SEGMENTS):
        segment = _bytes_at(contents, at, 10)  # marker, length, then its data
        exif = _starts_with(segment, b"\xff\xe1") & _starts_with(segment, b"Exif\0\0", 4)
        found = tf.where((found < 0) & exif, at + 10, found)
        at += 2 + _uint(segment, 2, 2, big_endian=True)
    return found


def _find(contents: tf.Tensor, marker: bytes, skip: int) -> tf.Tensor:
    """The position `skip` bytes after the first `marker` in `contents`; -1 if none."""
    at = tf.cast(tf.strings.length(tf.strings.split(contents, marker, maxsplit=1)[0]), tf.int64)
    return tf.where(at < tf.cast(tf.strings.length(contents), tf.int64), at + skip, -1)


def _orientation(contents: tf.Tensor, header: tf.Tensor) -> tf.Tensor:
    """EXIF orientation, 1 to 8, of a JPEG (APP1), PNG (eXIf) or WebP (EXIF)."""
    webp_exif = tf.logical_and(  # a VP8X header flags its EXIF chunk
        _starts_with(header, b"VP8X", 12), tf.bitwise.bitwise_and(header[20], 0x08) > 0
    )
    searched = tf.cond(  # PNG's eXIf comes before the pixel data; WebP's after
        tf.logical_or(_is_png(header), tf.logical_and(_is_webp(header), webp_exif)),
        lambda: tf.where(
            _is_png(header),
            _find(tf.strings.substr(contents, 0, 2**16), b"eXIf", 4),
            _find(contents, b"EXIF", 8),
        ),
        lambda: tf.constant(-1, tf.int64),
    )
    start = tf.where(_is_jpeg(header), _jpeg_exif(contents), searched)
    one = tf.constant(1, tf.int64)
    return tf.cond(start >= 0, lambda: _tiff_orientation(contents, start), lambda: one)


def _upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """`image` turned as its EXIF orientation (1 to 8) says."""

    def turned(transpose: bool, axes: list[int]) -> Callable[[], tf.Tensor]:
        def turn():
            out = tf.transpose(image, [1, 0, 2]) if transpose else image
            return tf.reverse(out, axes) if axes else out

        return turn

    branches = [
        turned(False, []),  # 1: as stored
        turned(False, [1]),  # 2: mirrored
        turned(False, [0, 1]),  # 3: upside down
        turned(False, [0]),  # 4: flipped
        turned(True, []),  # 5: transposed
        turned(True, [1]),  # 6: a quarter turn clockwise
        turned(True, [0, 1]),  # 7: transversed
        turned(True, [0]),  # 8: a quarter turn counter-clockwise
    ]
    return tf.switch_case(tf.cast(orientation - 1, tf.int32), branches)


def _with_channels(image: tf.Tensor, num_channels: int) -> tf.Tensor:
    """uint8 gray, gray+alpha, RGB or RGBA -> `num_channels` (1, 3 or 4)."""
    channels = tf.shape(image)[-1]
    gray = channels < 3
    if num_channels == 1:
        return tf.cond(gray, lambda: image[..., :1], lambda: _luma(image[..., :3]))
    color = tf.cond(gray, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])
    if num_channels == 3:
        return color
    opaque = tf.fill(tf.concat([tf.shape(image)[:2], [1]], 0), tf.constant(255, tf.uint8))
    alpha = tf.cond(tf.equal(channels % 2, 0), lambda: image[..., -1:], lambda: opaque)
    return tf.concat([color, alpha], -1)


def _luma(rgb: tf.Tensor) -> tf.Tensor:
    weighted = tf.reduce_sum(tf.cast(rgb, tf.int32) * _LUMA, -1, keepdims=True)
    return tf.cast(tf.bitwise.right_shift(weighted + 2**15, 16), tf.uint8)


def decode_image(
    contents: TensorLike, num_channels: int = 3, *, max_pixels: int | None = None
) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 `(height, width, num_channels)`.

    Every format converts to 1, 3 or 4 channels, and EXIF orientation is
    applied (see the module's docstring). An image whose header gives more
    than `max_pixels` (default `MAX_IMAGE_PIXELS`) pixels is refused before
    it is decoded, with an `InvalidArgumentError` (`INVALID_ARGUMENT` from TF
    Serving) that says what the header claims: a few small files must not
    take gigabytes and minutes to decode. A GIF decodes its first image only
    (its other frames are cut off before the decoder sees them), and its size
    is the larger of its screen and that image; animated WebP images are
    refused.
    """
    if num_channels not in (1, 3, 4):
        raise ValueError(
            f"Images decode to 1, 3 or 4 channels, received num_channels={num_channels!r}"
        )
    budget = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    contents = tf.convert_to_tensor(contents, tf.string)
    header = _bytes_at(contents, 0, _HEADER_BYTES)
    bmp = _bmp_fields(header)  # read once: for the size and for the colour table
    width, height, gif = _size(contents, header, bmp)
    pixels = width * height
    gif_claim = tf.strings.format(
        " (a GIF screen of {}x{} whose first image is {}x{} at {},{})",
        [
            _uint(header, 6, 2),
            _uint(header, 8, 2),
            gif["width"],
            gif["height"],
            gif["left"],
            gif["top"],
        ],
    )
    claim = tf.strings.join(
        [
            tf.strings.format(
                f"the image is larger than the pixel budget of {budget:,} pixels "
                "(tfvitmae.data.decoding.MAX_IMAGE_PIXELS): its header claims {}x{}, {} pixels",
                [width, height, pixels],
            ),
            tf.where(_is_gif(header), gif_claim, ""),
            "; refused before decoding",
        ]
    )
    checks = [
        tf.debugging.assert_non_negative(
            pixels,
            message="JPEG XL images are not read: their size cannot be checked before "
            "decoding; convert them to PNG or JPEG",
        ),
        tf.debugging.assert_equal(
            _is_animated_webp(header), False, message="the image " + _ANIMATED_WEBP
        ),
        tf.debugging.assert_equal(
            tf.logical_or(tf.logical_not(_is_gif(header)), gif["end"] > 0),
            True,
            message="the GIF has no whole image: it ends or its trailer comes before one",
        ),
    ]
    with tf.control_dependencies(checks):
        within = tf.debugging.Assert(pixels <= budget, [claim])
    with tf.control_dependencies([within]):
        paletted = tf.logical_and(_starts_with(header, b"BM"), bmp["bits"] <= 8)
        image = tf.cond(
            paletted,
            lambda: _palette_bmp(contents, header, bmp),
            lambda: tf.io.decode_image(
                tf.where(_is_gif(header), _first_gif_frame(contents, gif), contents),
                channels=0,
                expand_animations=False,
            ),
        )
    image = _upright(_with_channels(image, num_channels), _orientation(contents, header))
    image.set_shape((None, None, num_channels))
    return image


def tf_error_reason(error: tf.errors.OpError) -> str:
    """The first line of a TensorFlow error, without its `{{function_node ...}}`
    prefix and `[Op:...]` suffix, or the message of a failed `tf.debugging.Assert`."""
    message = error.message or str(error)
    # tf.debugging.Assert's message: its data, eagerly or in a graph.
    asserted = re.search(
        r"Summarized data: b(['\"])(.*?)\1$|assertion failed: \[(.*?)\]$", message, re.M
    )
    if asserted:
        return asserted.group(2) or asserted.group(3)
    reason = message.splitlines()[0]
    reason = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", reason)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", reason).strip()


def load_images(images: TensorLike, num_channels: int = 3) -> list[np.ndarray]:
    """File paths, PIL images or uint8 arrays -> a list of uint8 `(H, W, num_channels)`.

    Accepts one image, a list of them, or an `(n, H, W[, C])` array.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise ValueError("Expected at least one image, received none")
    return [_load_image(image, num_channels) for image in images]


def _load_image(image, num_channels: int) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No image file at {path!r}")
        try:
            return decode_image(tf.io.read_file(path), num_channels).numpy()
        except tf.errors.InvalidArgumentError as e:
            raise ValueError(f"Cannot read {path} as an image: {tf_error_reason(e)}") from None
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("L" if num_channels == 1 else "RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "Expected a file path, a PIL image or a (height, width[, channels]) array with 1, 3 "
            f"or 4 channels, received {type(image).__name__} of shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            "Expected uint8 images (0-255), received a float array; for images already in "
            "[0, 1], pass (image * 255).astype('uint8')"
        )
    if array.dtype != np.uint8:  # uint16 is not 0-255, nor are bool or negative values
        raise ValueError(
            f"Expected uint8 images (0-255), received {array.dtype}; convert them first "
            "(16-bit images: (image // 257).astype('uint8'))"
        )
    if 0 in array.shape[:2]:
        raise ValueError(f"Expected an image with pixels, received shape {array.shape}")
    return match_channels(array, num_channels)


def match_channels(array: np.ndarray, num_channels: int) -> np.ndarray:
    """Channels-last `array` with `num_channels` channels, as `decode_image`
    converts: RGBA drops alpha, gray repeats to RGB, RGB becomes gray by
    ITU-R 601 luma (Pillow's integer formula for uint8)."""
    channels = array.shape[-1]
    if channels == num_channels:
        return array
    if channels == 4 and num_channels == 3:
        return array[..., :3]
    if channels == 1 and num_channels == 3:
        return np.repeat(array, 3, axis=-1)
    if num_channels == 1 and channels >= 3:
        if array.dtype == np.uint8:
            weighted = array[..., :3].astype(np.int32) @ np.array(_LUMA, np.int32)
            return ((weighted + 2**15) >> 16).astype(np.uint8)[..., None]
        return array[..., :3] @ (np.array(_LUMA, array.dtype) / 2**16)[:, None]
    raise ValueError(f"Cannot convert {channels}-channel images to {num_channels} channels")
