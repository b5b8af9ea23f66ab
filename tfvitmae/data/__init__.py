"""Images in: the image processor, the `tf.data` pipeline, image folders and
MAE's augmentation.

- `decoding.py`: encoded images and arrays to uint8 pixels (pixel budget,
  colour tables, EXIF orientation, channel counts), the same on every path.
- `image_processor.py`: `ViTMAEImageProcessor` (resize, rescale, normalise;
  `preprocessor_config.json`).
- `pipeline.py`: `make_dataset`, from folders, file lists, arrays or datasets
  to batches of `pixel_values`, each pass pinned to its epoch (`set_epoch`).
- `hf_datasets.py`: 🤗 Datasets to `tf.data` (the models' `prepare_tf_dataset`).
- `folders.py`: folder scans, train/validation splits, broken-image checks.
- `augmentation.py`: random resized crop, flip, MixUp/CutMix, plug-in augmenters.
- `labels.py`: class labels checked to be indices below the class count.
"""

from ..utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "IMAGENET_MEAN": "image_processor",
        "IMAGENET_STD": "image_processor",
        "ViTMAEImageProcessor": "image_processor",
        "channel_stats": "image_processor",
        "MAX_IMAGE_PIXELS": "decoding",
        "decode_image": "decoding",
        "image_pixels": "decoding",
        "load_images": "decoding",
        "match_channels": "decoding",
        "denormalize": "pipeline",
        "make_dataset": "pipeline",
        "normalize": "pipeline",
        "process_part": "pipeline",
        "set_epoch": "pipeline",
        "steps_per_pass": "pipeline",
        "to_tf_dataset": "hf_datasets",
        "find_unreadable": "folders",
        "list_image_files": "folders",
        "split_files": "folders",
        "CROP_RATIO": "augmentation",
        "CROP_SCALE": "augmentation",
        "batch_augment": "augmentation",
        "mixers": "augmentation",
        "random_flip": "augmentation",
        "random_resized_crop": "augmentation",
    },
    moved={"DataEpoch": "tfvitmae.training.callbacks:DataEpoch"},
)
