"""The pixel budget holds whatever an image's header claims: a GIF's frames
beyond its screen, animations, hostile sizes and truncated files."""

import io
import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfvitmae.data import decoding
from tfvitmae.data.decoding import decode_image, image_pixels, load_images

BUDGET = 4096  # pixels: small, so that hostile claims are cheap to try


def pillow_bytes(frames, fmt="GIF", **options):
    from PIL import Image

    frames = [Image.fromarray(f) if isinstance(f, np.ndarray) else f for f in frames]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=len(frames) > 1, append_images=frames[1:], **options)
    return buffer.getvalue()


def with_gif_screen(contents, width, height):
    """`contents`, a GIF, with its logical screen claiming `width` x `height`."""
    return contents[:6] + width.to_bytes(2, "little") + height.to_bytes(2, "little") + contents[10:]


def gif_blocks(contents):
    """The (kind, position) of a GIF's blocks, walked in Python: kind is "!"
    (extension), "," (image) or ";" (trailer)."""
    table = lambda flags: 3 << ((flags & 7) + 1) if flags & 0x80 else 0  # noqa: E731
    at, blocks = 13 + table(contents[10]), []
    while at < len(contents) and contents[at] in b"!,":
        blocks.append((chr(contents[at]), at))
        at = at + 2 if contents[at] == 0x21 else at + 10 + table(contents[at + 9]) + 1
        while contents[at]:
            at += 1 + contents[at]
        at += 1
    return blocks + [(";", at)] if contents[at : at + 1] == b";" else blocks


class PeakMemory:
    """The most the resident memory grew over a block, sampled every millisecond."""

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()
        return self

    def _rss(self):
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._done.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.growth = self.peak - self.start


# ------------------------------------------------------------ regressions
def test_a_small_gif_screen_over_a_large_frame_is_measured_by_the_frame(tmp_path, monkeypatch):
    """TensorFlow decodes a GIF frame at its own size, whatever the screen
    says: a 16x16 screen over a 400x300 frame decoded to 400x300 under a
    budget of 4,096 pixels."""
    contents = with_gif_screen(pillow_bytes([np.zeros((300, 400), np.uint8)]), 16, 16)
    assert int(image_pixels(contents)) == 400 * 300
    path = tmp_path / "small-screen.gif"
    path.write_bytes(contents)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        decode_image(contents, max_pixels=BUDGET)
    message = error.value.message
    assert "budget of 4,096 pixels" in message and "claims 400x300, 120000 pixels" in message
    assert "a GIF screen of 16x16 whose first image is 400x300 at 0,0" in message
    assert decode_image(contents).shape == (300, 400, 3)  # within the default budget
    monkeypatch.setattr(decoding, "MAX_IMAGE_PIXELS", BUDGET)
    with pytest.raises(ValueError, match=r"Cannot read .*small-screen.gif as an image: the image"):
        load_images([str(path)])


def test_the_reported_gif_bombs_cost_no_memory():
    """The two files of issue 30: a 107 KB GIF whose 16x16 screen holds a
    12000x12000 frame (was +565 MB and 1.7 s), and 60 frames of 1500x1500
    (was +133 MB): the first is refused, the second decodes one frame."""
    from PIL import Image

    huge = with_gif_screen(pillow_bytes([Image.new("P", (12000, 12000))]), 16, 16)
    assert len(huge) < 200_000
    with PeakMemory() as memory, pytest.raises(tf.errors.InvalidArgumentError, match="budget"):
        decode_image(huge)
    assert memory.growth < 60e6, memory.growth
    frames = [Image.new("P", (1500, 1500), color=i) for i in range(60)]
    animated = pillow_bytes(frames, optimize=False)
    assert len(gif_blocks(animated)) > 60 and len(animated) < 1_000_000
    with PeakMemory() as memory:
        image = decode_image(animated)
    assert image.shape == (1500, 1500, 3)
    assert memory.growth < 60e6, memory.growth


def test_an_animated_gif_decodes_its_first_frame_only(monkeypatch):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (30, 40), dtype=np.uint8) for _ in range(4)]
    contents = pillow_bytes(frames, optimize=False, disposal=1)
    first = tf.io.decode_image(contents, 3, expand_animations=True)[0]
    given_to_tensorflow = []
    decode = tf.io.decode_image

    def recording(data, *args, **kwargs):
        given_to_tensorflow.append(data.numpy())
        return decode(data, *args, **kwargs)

    monkeypatch.setattr(tf.io, "decode_image", recording)
    np.testing.assert_array_equal(decode_image(contents), first)
    assert [kind for kind, _ in gif_blocks(given_to_tensorflow[0])].count(",") == 1
    assert [kind for kind, _ in gif_blocks(contents)].count(",") == 4


def test_an_animated_webp_is_refused_before_decoding():
    """TensorFlow 2.21 corrupts the heap decoding an animated WebP (the
    process aborts with 'free(): invalid next size')."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    contents = pillow_bytes(frames, "WEBP")
    assert b"ANMF" in contents
    with pytest.raises(tf.errors.InvalidArgumentError, match="animated WebP image, which is not"):
        decode_image(contents)


def test_gif_blocks_are_walked_across_many_tiny_blocks_and_windows():
    """A comment of 300,000 one-byte sub-blocks (600 KB, many walk windows)
    before the image: the image is still found, whole."""
    rng = np.random.default_rng(1)
    plain = pillow_bytes([rng.integers(0, 256, (20, 30), dtype=np.uint8)])
    first = gif_blocks(plain)[0][1]
    padded = plain[:first] + b"!\xfe" + b"\x01c" * 300_000 + b"\x00" + plain[first:]
    assert [kind for kind, _ in gif_blocks(padded)] == ["!", ",", ";"]
    np.testing.assert_array_equal(decode_image(padded), decode_image(plain))


@pytest.mark.parametrize("cut", [1, 3, 12, 14, 20, -2])
def test_a_truncated_gif_is_refused(cut):
    plain = pillow_bytes([np.random.default_rng(2).integers(0, 256, (20, 30), dtype=np.uint8)])
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_image(plain[:cut])


# ------------------------------------------------------------ properties
def patched(contents, at, value, size, byteorder="little"):
    return contents[:at] + value.to_bytes(size, byteorder) + contents[at + size :]


@st.composite
def hostile_images(draw):
    """A real small image whose header then claims other sizes."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    height, width = draw(st.integers(1, 90)), draw(st.integers(1, 90))  # to twice the budget
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    fmt = draw(st.sampled_from(["PNG", "GIF", "GIF-animated", "BMP", "JPEG", "WEBP", "WEBPL"]))
    side16 = st.one_of(st.integers(0, 64), st.integers(0, 2**16 - 1))
    side32 = st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1))
    if fmt == "PNG":
        contents = pillow_bytes([pixels], "PNG")
        contents = patched(contents, 16, draw(side32), 4, "big")
        return patched(contents, 20, draw(side32), 4, "big")
    if fmt.startswith("GIF"):
        count = 3 if fmt == "GIF-animated" else 1
        contents = pillow_bytes([pixels[..., 0]] * count, optimize=False, disposal=1)
        contents = with_gif_screen(contents, draw(side16), draw(side16))
        for kind, at in gif_blocks(contents):
            if kind == "," and draw(st.booleans()):  # left, top, width, height
                for field in range(4):
                    contents = patched(contents, at + 1 + 2 * field, draw(side16), 2)
        return contents
    if fmt == "BMP":
        contents = pillow_bytes([pixels], "BMP")
        contents = patched(contents, 18, draw(side32), 4)
        return patched(contents, 22, draw(side32), 4)
    if fmt == "JPEG":  # the frame header (SOF0) holds height, then width
        contents = pillow_bytes([pixels], "JPEG")
        sof = contents.index(b"\xff\xc0")
        contents = patched(contents, sof + 5, draw(side16), 2, "big")
        return patched(contents, sof + 7, draw(side16), 2, "big")
    contents = pillow_bytes([pixels], "WEBP", lossless=fmt == "WEBPL")
    if contents[12:16] == b"VP8L":
        return patched(contents, 21, draw(st.integers(0, 2**28 - 1)), 4)
    return patched(contents, 26, draw(st.integers(0, 2**32 - 1)), 4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=hostile_images())
def test_property_no_header_decodes_past_the_budget(contents):
    """Whatever sizes a header claims, decoding refuses or gives an image
    within the budget, and never more pixels than `image_pixels` said."""
    try:
        claimed = int(image_pixels(contents))
    except tf.errors.InvalidArgumentError:  # a header TensorFlow cannot read (a 0 or 65535 side)
        with pytest.raises(tf.errors.InvalidArgumentError):
            decode_image(contents, max_pixels=BUDGET)
        return
    try:
        image = decode_image(contents, max_pixels=BUDGET)
    except tf.errors.InvalidArgumentError:
        return
    decoded = image.shape[0] * image.shape[1]
    assert decoded <= min(claimed, BUDGET), (decoded, claimed)


@settings(max_examples=30, deadline=None)
@given(
    screen=st.tuples(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1)),
    frames=st.lists(
        st.tuples(*[st.integers(0, 2**16 - 1)] * 4, st.binary(max_size=40)), max_size=4
    ),
    tail=st.sampled_from([b"", b";", b"\x00;", b"!"]),
)
def test_property_hand_written_gif_headers_are_measured_or_refused(screen, frames, tail):
    """GIFs written block by block (screens and image descriptors of any
    size and position, with arbitrary data): decoding refuses, or gives at
    most the budget's pixels; the walk never hangs on the data."""
    contents = b"GIF89a" + screen[0].to_bytes(2, "little") + screen[1].to_bytes(2, "little")
    contents += b"\x80\0\0" + bytes(6)  # a global table of two colours
    for left, top, width, height, data in frames:
        contents += b"," + b"".join(n.to_bytes(2, "little") for n in (left, top, width, height))
        contents += b"\0\x02" + data
    contents += tail
    start = time.monotonic()
    try:
        image = decode_image(contents, max_pixels=BUDGET)
    except tf.errors.InvalidArgumentError:
        pass
    else:
        assert image.shape[0] * image.shape[1] <= BUDGET
    assert time.monotonic() - start < 10
