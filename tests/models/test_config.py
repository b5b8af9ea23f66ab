import json
import os

import pytest

from tfvitmae import PRESETS, ViTMAEConfig
from tfvitmae.models.config import as_config

DOCUMENTED_DEFAULTS = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    initializer_range=0.02,
    layer_norm_eps=1e-12,
    image_size=224,
    patch_size=16,
    num_channels=3,
    qkv_bias=True,
    decoder_num_attention_heads=16,
    decoder_hidden_size=512,
    decoder_num_hidden_layers=8,
    decoder_intermediate_size=2048,
    mask_ratio=0.75,
    norm_pix_loss=False,
)


def test_documented_defaults():
    config = ViTMAEConfig()
    for name, value in DOCUMENTED_DEFAULTS.items():
        assert getattr(config, name) == value, name
    assert config.num_patches == 196 and config.patch_dim == 768


def test_dict_round_trip_keeps_unknown_keys():
    data = ViTMAEConfig(hidden_size=64, num_attention_heads=4).to_dict()
    data["architectures"] = ["ViTMAEForPreTraining"]
    data["transformers_version"] = "4.40.0"
    config = ViTMAEConfig.from_dict(data)
    assert config.to_dict() == data
    assert config.to_dict()["model_type"] == "vit_mae"


def test_save_and_load_pretrained(tmp_path):
    config = ViTMAEConfig(image_size=(32, 48), patch_size=8, norm_pix_loss=True, extra_key={"a": 1})
    path = config.save_pretrained(tmp_path)
    assert json.loads(open(path).read())["image_size"] == [32, 48]
    loaded = ViTMAEConfig.from_pretrained(tmp_path)
    assert loaded == config and loaded.grid_size == (4, 6) and loaded.extra["extra_key"] == {"a": 1}
    assert not list(tmp_path.glob("*.tmp"))


def test_reads_a_hugging_face_config_json(tmp_path):
    import transformers  # in the test extra: the reference implementation

    hf = transformers.ViTMAEConfig(
        hidden_size=64, num_attention_heads=4, mask_ratio=0.5, norm_pix_loss=True
    )
    hf.save_pretrained(tmp_path)
    ours = ViTMAEConfig.from_pretrained(tmp_path)
    for name in DOCUMENTED_DEFAULTS:
        assert getattr(ours, name) == getattr(hf, name), name
    ours.save_pretrained(tmp_path / "back")
    again = transformers.ViTMAEConfig.from_pretrained(tmp_path / "back")
    for name in DOCUMENTED_DEFAULTS:
        assert getattr(again, name) == getattr(hf, name), name


def test_presets():
    assert set(PRESETS) == {"base", "large", "huge"}
    huge = ViTMAEConfig.from_preset("huge")
    assert (
        huge.hidden_size,
        huge.num_hidden_layers,
        huge.num_attention_heads,
        huge.patch_size,
    ) == (1280, 32, 16, 14)
    large = ViTMAEConfig.from_preset("large", image_size=448)
    assert (
        large.hidden_size == 1024 and large.image_size == 448 and large.decoder_hidden_size == 512
    )
    with pytest.raises(ValueError, match="Unknown preset 'giant'"):
        ViTMAEConfig.from_preset("giant")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(mask_ratio=1.0), r"mask_ratio must be a number in \[0, 1\), received 1.0"),
        (dict(mask_ratio=-0.1), r"mask_ratio .* received -0.1"),
        (
            dict(image_size=16, patch_size=4, mask_ratio=0.99),
            r"mask_ratio 0.99 keeps none of the 16 patches.* at most 0.9375",
        ),
        (
            dict(hidden_size=100, num_attention_heads=12),
            r"hidden_size \(100\) must be divisible .* heads \(12\)",
        ),
        (
            dict(decoder_hidden_size=30, decoder_num_attention_heads=4),
            r"decoder_hidden_size \(30\)",
        ),
        (
            dict(image_size=225),
            r"image_size must be divisible by patch_size 16, received image_size=225",
        ),
        (dict(hidden_act="gelu_foo"), r"hidden_act must be one of .* received 'gelu_foo'"),
        (dict(num_channels=0), r"num_channels must be a positive integer, received 0"),
        (dict(layer_norm_eps=0), r"layer_norm_eps must be a positive, finite number, received 0"),
        (dict(layer_norm_eps=float("nan")), r"layer_norm_eps must be a positive, .* received nan"),
        (dict(initializer_range=float("inf")), r"initializer_range must .* received inf"),
        (dict(attention_probs_dropout_prob=float("nan")), r"a number in \[0, 1\), received nan"),
        (dict(patch_size=(16,)), r"patch_size must be .* received \(16,\)"),
        (dict(qkv_bias="yes"), r"qkv_bias must be True or False, received 'yes'"),
        (dict(hidden_dropout_prob=1.5), r"hidden_dropout_prob .* received 1.5"),
    ],
)
def test_invalid_values_name_field_and_value(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ViTMAEConfig(**kwargs)


def test_an_invalid_config_json_names_the_file_and_field(tmp_path):
    """`NaN` in a `config.json` (which Python's json reads) is refused on load."""
    (tmp_path / "config.json").write_text('{"model_type": "vit_mae", "layer_norm_eps": NaN}')
    pattern = r"config.json: ViTMAEConfig.layer_norm_eps must be a positive, finite number"
    with pytest.raises(ValueError, match=pattern):
        ViTMAEConfig.from_pretrained(tmp_path)


def test_from_dict_rejects_other_model_types(tmp_path):
    with pytest.raises(ValueError, match=r"model_type 'vit_mae' \(or 'vit'\), received 'bert'"):
        ViTMAEConfig.from_dict({"model_type": "bert"})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ViTMAEConfig.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="found nothing"):
        ViTMAEConfig.from_pretrained(tmp_path / "missing")


def test_copy_revalidates():
    config = ViTMAEConfig()
    assert config.copy(mask_ratio=0.5).mask_ratio == 0.5 and config.mask_ratio == 0.75
    with pytest.raises(ValueError, match="mask_ratio"):
        config.copy(mask_ratio=2)


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, tfvitmae; tfvitmae.ViTMAEConfig(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_output_flags_round_trip_and_are_fields():
    assert {"output_attentions", "output_hidden_states", "return_dict"} <= set(ViTMAEConfig.FIELDS)
    config = ViTMAEConfig(output_hidden_states=True, return_dict=False)
    assert config.output_hidden_states and not config.output_attentions
    assert not config.use_return_dict
    data = config.to_dict()
    assert data["output_hidden_states"] is True and data["return_dict"] is False
    assert "output_attentions" not in data  # defaults are not written
    assert ViTMAEConfig.from_dict(data) == config
    again = config.copy(output_attentions=True, return_dict=True)
    assert again.output_attentions and again.use_return_dict and again.output_hidden_states
    assert not ViTMAEConfig().output_hidden_states and ViTMAEConfig().use_return_dict


def test_every_field_is_accepted_by_name():
    config = ViTMAEConfig()
    for name in ViTMAEConfig.FIELDS:
        if name in ("return_dict", "use_return_dict"):
            assert config.copy(**{name: False}).use_return_dict is False
        else:
            assert hasattr(config, name), name
            assert config.copy(**{name: getattr(config, name)}) == config, name


def test_as_config():
    config = ViTMAEConfig(hidden_size=64, num_attention_heads=4)
    assert as_config(config) is config
    assert as_config(config.to_dict()) == config
    with pytest.raises(ValueError, match="config must be a ViTMAEConfig or a dict, received str"):
        as_config("facebook/vit-mae-base")


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_encoder_parameters_count_what_a_model_builds(qkv_bias):
    from tfvitmae import TFViTMAEModel

    from ..helpers import tiny_config

    config = tiny_config(qkv_bias=qkv_bias)
    assert config.encoder_parameters == TFViTMAEModel(config).count_params()


@pytest.mark.parametrize(
    "sizes, pattern",
    [
        (dict(hidden_size=2**20, num_attention_heads=1), r"hidden_size=1048576"),
        (dict(image_size=2**20, patch_size=16), r"4,294,967,296 patches of image_size=1048576"),
    ],
)
def test_a_model_too_large_for_memory_is_refused_before_it_is_built(sizes, pattern):
    """A raw MemoryError (NumPy) or TensorFlow's OOM came after allocating what fit."""
    from tfvitmae import TFViTMAEModel

    from ..helpers import tiny_config

    with pytest.raises(MemoryError, match=rf"encoder alone has [\d,]+ parameters .*{pattern}"):
        TFViTMAEModel(tiny_config(**sizes))


def test_transformers_attributes_read_as_its_defaults_and_kept_keys_as_attributes():
    config = ViTMAEConfig(architectures=["ViTMAEForPreTraining"], is_decoder=False, foo={"a": 1})
    assert config.architectures == ["ViTMAEForPreTraining"] and config.foo == {"a": 1}
    assert config.is_decoder is False and "is_decoder" in config.to_dict()  # given: written back
    plain = ViTMAEConfig()
    assert plain.architectures is None and plain.problem_type is None
    assert plain.pruned_heads == {} and plain.torchscript is False
    assert "architectures" not in plain.to_dict()  # absent: not written
    plain.architectures = ["X"]  # set later: kept and written, as in transformers
    assert ViTMAEConfig.from_dict(plain.to_dict()).architectures == ["X"]
    with pytest.raises(AttributeError, match="no attribute 'no_such_key'"):
        plain.no_such_key  # noqa: B018


@pytest.mark.parametrize(
    "key, value",
    [
        ("is_decoder", True),
        ("add_cross_attention", True),
        ("is_encoder_decoder", True),
        ("pruned_heads", {"0": [1]}),
        ("chunk_size_feed_forward", 5),
        ("tie_encoder_decoder", True),
    ],
)
def test_settings_these_models_do_not_have_are_refused(key, value):
    with pytest.raises(ValueError, match=rf"does not support {key}=.*only .* is accepted"):
        ViTMAEConfig(**{key: value})


@pytest.mark.parametrize(
    "key, suggestion",
    [("hiden_size", "hidden_size"), ("mask_ration", "mask_ratio"), ("num_channel", "num_channels")],
)
def test_a_misspelt_field_is_refused_with_the_field_it_resembles(key, suggestion):
    with pytest.raises(ValueError, match=rf"unknown key '{key}'; did you mean '{suggestion}'\?"):
        ViTMAEConfig(**{key: 8})


def test_labels_as_in_transformers(tmp_path):
    config = ViTMAEConfig()
    assert config.num_labels == 2 and config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    assert "id2label" not in config.to_dict()  # the default classes are not written
    config = ViTMAEConfig(num_labels=5)
    assert len(config.id2label) == len(config.label2id) == 5
    config.num_labels = 3
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    named = ViTMAEConfig(id2label={"0": "cat", "1": "dog", "2": "fox"})  # JSON keys are strings
    assert named.id2label == {0: "cat", 1: "dog", 2: "fox"} and named.label2id["fox"] == 2
    assert named.num_labels == 3
    named.to_json_file(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["id2label"] == {
        "0": "cat",
        "1": "dog",
        "2": "fox",
    }
    assert ViTMAEConfig.from_json_file(tmp_path / "c.json") == named


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(num_labels=0), r"num_labels must be a positive integer, received 0"),
        (dict(id2label={0: "a"}, num_labels=2), r"num_labels=2 and an id2label of 1 classes"),
        (dict(id2label={0: "a", 2: "b"}), r"indices 0 to 1, received \[0, 2\]"),
        (dict(id2label={0: "a"}, label2id={"b": 0}), r"label2id must be the inverse of id2label"),
        (dict(id2label=["a", "b"]), r"id2label must be a dict, received list"),
        (dict(id2label={"x": "a"}), r"id2label must map class indices to names"),
    ],
)
def test_inconsistent_labels_are_refused(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ViTMAEConfig(**kwargs)


def test_labels_travel_to_and_from_transformers(tmp_path):
    import transformers

    labels = {0: "cat", 1: "dog", 2: "fox"}
    transformers.ViTMAEConfig(
        id2label=labels, label2id={"cat": 0, "dog": 1, "fox": 2}
    ).save_pretrained(tmp_path)
    ours = ViTMAEConfig.from_pretrained(tmp_path)
    assert ours.id2label == labels and ours.num_labels == 3
    # The full form (every transformers attribute, as `use_diff=False` writes) loads in both.
    ours.to_json_file(tmp_path / "config.json", use_diff=False)
    full = json.loads((tmp_path / "config.json").read_text())
    assert full["is_decoder"] is False and full["return_dict"] is True
    theirs = transformers.ViTMAEConfig.from_pretrained(tmp_path)
    assert theirs.id2label == labels and theirs.hidden_size == ours.hidden_size
    assert ViTMAEConfig.from_pretrained(tmp_path) == ours.copy(
        **{k: v for k, v in full.items() if k not in ViTMAEConfig.FIELDS and k != "model_type"}
    )


def test_update_sets_fields_and_keys_or_changes_nothing():
    config = ViTMAEConfig()
    config.update({"mask_ratio": 0.5, "architectures": ["A"]})
    assert config.mask_ratio == 0.5 and config.architectures == ["A"]
    with pytest.raises(ValueError, match="mask_ratio"):
        config.update({"mask_ratio": 2.0, "hidden_size": 64})
    assert config.mask_ratio == 0.5 and config.hidden_size == 768


@pytest.mark.parametrize(
    "key, which",
    [
        ("to_dict", "names a method of ViTMAEConfig"),
        ("copy", "names a method of ViTMAEConfig"),
        ("validate", "names a method of ViTMAEConfig"),
        ("from_dict", "names a method of ViTMAEConfig"),
        ("num_patches", "names a property of ViTMAEConfig"),
        ("STRUCTURE", "names an attribute of ViTMAEConfig"),
        ("_id2label", "names an attribute of ViTMAEConfig"),
        ("__dict__", "is a Python special name"),
        ("__class__", "is a Python special name"),
    ],
)
def test_a_key_naming_a_method_or_attribute_is_refused_by_name(tmp_path, key, which):
    """`{"to_dict": 1}` replaced the method, and `__dict__` the config's state."""
    data = {**ViTMAEConfig().to_dict(), key: 1}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"config\.json: .*key '{key}', which {which}"):
        ViTMAEConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=which):
        ViTMAEConfig(**{key: 1})
    config = ViTMAEConfig()
    with pytest.raises(ValueError, match=which):
        config.update({key: 1})
    assert config == ViTMAEConfig() and callable(config.to_dict)


def test_from_pretrained_reads_no_config_outside_the_folder(tmp_path):
    from tfvitmae.checkpoints.formats import CheckpointError

    outside, folder = tmp_path / "outside", tmp_path / "checkpoint"
    ViTMAEConfig(hidden_size=48, num_attention_heads=3).save_pretrained(outside)
    folder.mkdir()
    os.symlink(outside / "config.json", folder / "config.json")
    with pytest.raises(CheckpointError, match="config.json: it leads outside"):
        ViTMAEConfig.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="subfolder ../outside: it leads outside"):
        ViTMAEConfig.from_pretrained(tmp_path / "checkpoint", subfolder="../outside")
    assert ViTMAEConfig.from_pretrained(tmp_path, subfolder="outside").hidden_size == 48


def test_another_num_labels_renames_the_saved_classes_with_a_warning(tmp_path):
    """As transformers: `from_pretrained(dir, num_labels=5)` over a config
    naming 3 classes gives LABEL_0 ... LABEL_4, and says that the names went;
    `copy` and `update` take the same path. The same count keeps the names."""
    named = ViTMAEConfig(id2label={0: "cat", 1: "dog", 2: "fox"})
    named.save_pretrained(tmp_path)
    pattern = (
        r"num_labels=5 replaces the 3 classes .*\('cat', 'dog', 'fox'\) with LABEL_0 \.\.\. LABEL_4"
    )
    with pytest.warns(UserWarning, match=pattern):
        five = ViTMAEConfig.from_pretrained(tmp_path, num_labels=5)
    assert five.id2label == {i: f"LABEL_{i}" for i in range(5)} and five.num_labels == 5
    assert five.label2id["LABEL_4"] == 4
    with pytest.warns(UserWarning, match=pattern):
        assert named.copy(num_labels=5) == five
    updated = named.copy()
    with pytest.warns(UserWarning, match=pattern):
        updated.update({"num_labels": 5})
    assert updated == five
    assert ViTMAEConfig.from_pretrained(tmp_path, num_labels=3) == named
    # Names given beside the count are checked against it, not replaced.
    relabelled = named.copy(num_labels=2, id2label={0: "x", 1: "y"})
    assert relabelled.id2label == {0: "x", 1: "y"}
    with pytest.raises(ValueError, match=r"num_labels=5 and an id2label of 2 classes"):
        named.copy(num_labels=5, id2label={0: "x", 1: "y"})
    with pytest.raises(ValueError, match=r"num_labels must be a positive integer, received 0"):
        named.copy(num_labels=0)


def test_the_config_reads_as_a_config():
    """Issue 31: the class is its fields, derived sizes, I/O and validation
    (transformers' compatibility is `config_compat`), and its field list is
    written out, not read from `__init__`'s signature."""
    import inspect

    from tfvitmae.models import config as config_module

    lines, _ = inspect.getsourcelines(ViTMAEConfig)
    assert len(lines) <= 280, f"ViTMAEConfig is {len(lines)} lines"
    assert "inspect.signature" not in inspect.getsource(config_module)
    parameters = list(inspect.signature(ViTMAEConfig.__init__).parameters)
    assert list(ViTMAEConfig.STRUCTURE) == parameters[1:-1]  # the literal list is the signature's


def test_the_config_names_every_activation_the_models_have():
    """`config.py` lists the `hidden_act` names itself, so that it imports no Keras."""
    from tfvitmae.models.config import ACTIVATION_NAMES
    from tfvitmae.models.layers import ACTIVATIONS

    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS)
    for name in ACTIVATION_NAMES:
        assert ViTMAEConfig(hidden_act=name).hidden_act == name


def test_torchscript_is_a_plain_output_flag_that_round_trips(tmp_path):
    """`torchscript` is set by `__init__` like the other output flags (the models
    read it without `__getattr__`), written only when on, and a `config.json`
    carrying it reads back the same."""
    from tfvitmae.models.config_compat import OUTPUT_FLAG_DEFAULTS

    plain = ViTMAEConfig()
    assert {k: vars(plain)[k] for k in OUTPUT_FLAG_DEFAULTS} == OUTPUT_FLAG_DEFAULTS
    assert "torchscript" in ViTMAEConfig.OUTPUT_FLAGS and "torchscript" in ViTMAEConfig.FIELDS
    assert "torchscript" not in ViTMAEConfig(torchscript=False).to_dict()
    assert "torchscript" not in plain.extra
    data = {**plain.to_dict(), "torchscript": True}
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = ViTMAEConfig.from_pretrained(tmp_path)
    assert vars(loaded)["torchscript"] is True and loaded.use_return_dict is False
    assert loaded.to_dict() == data and "torchscript" not in loaded.extra
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == data
    assert plain.copy(torchscript=True) == loaded and loaded.copy(torchscript=False) == plain
