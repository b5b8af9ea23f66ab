import numpy as np
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.data.image_processor import ViTMAEImageProcessor
from tfvitmae.training.visualization import (
    COLUMN_TITLES,
    reconstruct,
    reconstruction_grid,
    write_reconstruction_grid,
)

from ..helpers import max_diff, noise_for, numpy_patchify, pixels, tiny_config


def test_reconstruct_masks_predicts_and_pastes():
    config = tiny_config(norm_pix_loss=True)
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    masked, reconstruction, pasted = reconstruct(model, x, noise=noise)
    assert masked.shape == reconstruction.shape == pasted.shape == (2, 32, 32, 3)
    out = model(x, noise=noise)
    mask = np.asarray(out.mask) == 1
    as_patches = lambda images: numpy_patchify(np.transpose(images, (0, 3, 1, 2)), 8)  # noqa: E731
    original = numpy_patchify(x, 8)
    # norm_pix_loss: the prediction is mapped back with each input patch's own
    # mean and (unbiased) std, as MAE's visualisation does.
    mean = original.mean(-1, keepdims=True)
    std = np.sqrt(original.var(-1, ddof=1, keepdims=True) + 1e-6)
    predicted = np.asarray(out.logits, np.float64) * std + mean
    assert max_diff(as_patches(reconstruction), predicted) < 1e-4  # every patch predicted
    assert not as_patches(masked)[mask].any()  # removed patches are blank
    assert max_diff(as_patches(masked)[~mask], original[~mask]) < 1e-6
    assert max_diff(as_patches(pasted)[~mask], original[~mask]) < 1e-5  # visible: the input's
    assert max_diff(as_patches(pasted)[mask], as_patches(reconstruction)[mask]) < 1e-5
    assert max_diff(as_patches(reconstruction)[~mask], original[~mask]) > 1e-2  # a prediction


def test_reconstruct_seed_picks_the_mask():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config, data_format="channels_last")
    x = pixels(config, channels_last=True)
    a, b, c = (reconstruct(model, x, seed=s)[0] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_grid_layout(tmp_path):
    config = tiny_config(num_channels=1, image_size=16, patch_size=4)
    model = TFViTMAEForPreTraining(config)
    x = pixels(config, batch=3)
    path = str(tmp_path / "sub" / "grid.png")
    processor = ViTMAEImageProcessor(size=16, image_mean=[0.5], image_std=[0.25])
    written = write_reconstruction_grid(model, x, path, processor=processor, seed=0, titles=False)
    assert written == path
    grid = tf.io.decode_png(tf.io.read_file(path)).numpy()
    zoom = 96 // 16  # small images are enlarged
    tile = 16 * zoom
    assert grid.shape == (3 * tile + 2 * 2, 4 * tile + 3 * 2, 1)  # 2-pixel white gaps
    first = np.transpose(x, (0, 2, 3, 1))[0] * 0.25 + 0.5  # undo the normalisation by hand
    first = np.clip(np.round(first * 255), 0, 255).astype("uint8")
    np.testing.assert_array_equal(grid[:tile:zoom, :tile:zoom], first)
    # Without a processor, the model's own undoes the normalisation.
    model.image_processor = processor
    default = write_reconstruction_grid(
        model, x, str(tmp_path / "default.png"), seed=0, titles=False
    )
    assert tf.io.read_file(default).numpy() == tf.io.read_file(path).numpy()
    assert (grid[tile : tile + 2] == 255).all() and (grid[:, tile : tile + 2] == 255).all()


def test_grid_titles_head_each_column():
    config = tiny_config(num_channels=1, image_size=16, patch_size=4)
    model = TFViTMAEForPreTraining(config)
    x = pixels(config, batch=2)
    plain = reconstruction_grid(model, x, seed=0, titles=False)
    titled = reconstruction_grid(model, x, seed=0)
    header = len(titled) - len(plain)
    assert header > 8 and titled.shape[1:] == plain.shape[1:]
    np.testing.assert_array_equal(titled[header:], plain)  # the images are unchanged below
    tile = 16 * (96 // 16)
    for column in range(len(COLUMN_TITLES)):
        strip = titled[:header, column * (tile + 2) : column * (tile + 2) + tile]
        assert (strip < 128).any(), f"no title text over column {column}"
    assert (titled[:header, tile : tile + 2] == 255).all()  # no text spills into the gaps
