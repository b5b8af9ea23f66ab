"""transformers' own TF test suite for ViTMAE, ported to this package.

What `tests/models/vit_mae/test_modeling_tf_vit_mae.py` (transformers 4.x)
checks, with the generic `TFModelTesterMixin` and `ConfigTester` tests it
inherits that apply to an image model, each as its intent and tolerances
with our API. Names follow theirs (`test_<their name>`). Where a test relies
on tf-keras mechanics, its Keras 3 translation is said in its docstring.

Deliberate differences, each tested here:
- The config is validated when it is made: HF's `ConfigTester(hidden_size=37)`
  and `ViTMAEConfig(hidden_size=0)` (12 heads) are refused, naming the field;
  the ported config tests use `hidden_size=36`.
- `PretrainedConfig` settings these models do not have (`is_decoder=True`,
  `add_cross_attention`, `tie_encoder_decoder`, `pruned_heads`,
  `chunk_size_feed_forward`) raise instead of being stored and ignored.
  `torch_dtype` stays the string it was given (there is no torch here), and
  `label2id`'s values are class indices (`"0"` reads as `0`).
- The pretraining loss is a scalar `()`, as in transformers' PyTorch model
  (their TF model reshaped it to `(1,)`).
- The tests that HF skips because the mask is random (`test_determinism`,
  `test_model_outputs_equivalence`) run here with a fixed `noise`.

Not ported, because they cannot apply: text-model tests (`inputs_embeds`,
token embeddings, generation, XLA generation, `int` input ids), ONNX op
lists (HF sets `test_onnx = False`), head pruning (`test_pruning = False`),
and the label tests (`test_loss_computation`, mismatched head shapes): the
two models take no labels.
"""

import copy
import inspect
import json
import math
import os
import pathlib

import keras
import numpy as np
import pytest

from tfvitmae import (
    TFViTMAEForImageClassification,
    TFViTMAEForPreTraining,
    TFViTMAEModel,
    ViTMAEConfig,
)
from tfvitmae.checkpoints import CheckpointError, load_state_dict

from ..helpers import max_diff, torch_reference_model

# TFViTMAEModelTester's sizes (their layer count was 5, later 2).
BATCH, IMAGE, PATCH, CHANNELS = 13, 30, 2, 3
HIDDEN, LAYERS, HEADS, INTERMEDIATE = 32, 2, 4, 37
MASK_RATIO = 0.6
NUM_PATCHES = (IMAGE // PATCH) ** 2
# As their tester computes it: (num_patches + 1) * (1 - mask_ratio), rounded up.
SEQ_LENGTH = int(math.ceil((1 - MASK_RATIO) * (NUM_PATCHES + 1)))
MODEL_CLASSES = (TFViTMAEModel, TFViTMAEForPreTraining)
IDS = ["model", "pretraining"]


def get_config(**overrides):
    values = dict(
        image_size=IMAGE,
        patch_size=PATCH,
        num_channels=CHANNELS,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        decoder_hidden_size=HIDDEN,
        decoder_num_hidden_layers=LAYERS,
        decoder_num_attention_heads=HEADS,
        decoder_intermediate_size=INTERMEDIATE,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        is_decoder=False,
        initializer_range=0.02,
        mask_ratio=MASK_RATIO,
    )
    return ViTMAEConfig(**{**values, **overrides})


def floats_tensor(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def inputs_dict(channels=CHANNELS):
    return {"pixel_values": floats_tensor((BATCH, channels, IMAGE, IMAGE))}


def fixed_noise(batch=BATCH, num_patches=NUM_PATCHES):
    """Their `np.random.seed(2); np.random.uniform(...)` (float64), without global state."""
    return np.random.RandomState(2).uniform(size=(batch, num_patches))


def first_output(output):
    if isinstance(output, dict):
        return next(iter(output.values()))
    return output[0] if isinstance(output, (tuple, list)) else output


def assert_outputs_same(after, before):
    """Their `assert_outputs_same`: the first outputs agree to 1e-5 (NaNs ignored)."""
    a, b = np.asarray(first_output(after)), np.asarray(first_output(before))
    assert a.shape == b.shape
    keep = ~(np.isnan(a) | np.isnan(b))
    assert np.max(np.abs(a[keep] - b[keep])) <= 1e-5


# ---------------------------------------------------------------- ConfigTester
CONFIG_INPUTS = dict(hidden_size=36)  # theirs: 37, which 12 heads do not divide (refused)


def test_config_refuses_their_hidden_size_of_37():
    with pytest.raises(ValueError, match=r"hidden_size \(37\) must be divisible .* heads \(12\)"):
        ViTMAEConfig(hidden_size=37)


def test_config_common_properties():
    config = ViTMAEConfig(**CONFIG_INPUTS)
    names = ("hidden_size", "num_attention_heads", "num_hidden_layers")
    for idx, name in enumerate(names):
        assert hasattr(config, name)
        setattr(config, name, idx)  # set by attribute: read back (checked at the next build)
        assert getattr(config, name) == idx
    # Given to the constructor: valid values are kept, `hidden_size=0` is refused.
    assert ViTMAEConfig(num_attention_heads=1).num_attention_heads == 1
    assert ViTMAEConfig(num_hidden_layers=2).num_hidden_layers == 2
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, received 0"):
        ViTMAEConfig(hidden_size=0)


def test_config_to_json_string():
    written = json.loads(ViTMAEConfig(**CONFIG_INPUTS).to_json_string())
    for key, value in CONFIG_INPUTS.items():
        assert written[key] == value


def test_config_to_json_file(tmp_path):
    first = ViTMAEConfig(**CONFIG_INPUTS)
    first.to_json_file(tmp_path / "config.json")
    second = ViTMAEConfig.from_json_file(tmp_path / "config.json")
    assert second.to_dict() == first.to_dict()


def test_config_from_and_save_pretrained(tmp_path, monkeypatch):
    first = ViTMAEConfig(**CONFIG_INPUTS)
    first.save_pretrained(tmp_path)
    assert ViTMAEConfig.from_pretrained(tmp_path).to_dict() == first.to_dict()
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(OSError):  # a path that is not there is not read as a Hub id
        ViTMAEConfig.from_pretrained(f".{tmp_path}")


def test_config_from_and_save_pretrained_subfolder(tmp_path):
    first = ViTMAEConfig(**CONFIG_INPUTS)
    first.save_pretrained(tmp_path / "test")
    second = ViTMAEConfig.from_pretrained(tmp_path, subfolder="test")
    assert second.to_dict() == first.to_dict()


def test_config_with_num_labels():
    config = ViTMAEConfig(**CONFIG_INPUTS, num_labels=5)
    assert len(config.id2label) == len(config.label2id) == 5
    config.num_labels = 3
    assert len(config.id2label) == len(config.label2id) == 3


def test_config_can_be_init_without_params():
    assert ViTMAEConfig() is not None


# `config_common_kwargs` of transformers' tests/utils/test_configuration_utils.py:
# every `PretrainedConfig` argument, each at a value that is not its default.
CONFIG_COMMON_KWARGS = dict(
    return_dict=False,
    output_hidden_states=True,
    output_attentions=True,
    torchscript=True,
    torch_dtype="float16",
    use_bfloat16=True,
    tf_legacy_loss=True,
    tie_word_embeddings=False,
    cross_attention_hidden_size=128,
    max_length=50,
    min_length=3,
    do_sample=True,
    early_stopping=True,
    num_beams=3,
    num_beam_groups=3,
    diversity_penalty=0.5,
    temperature=2.0,
    top_k=10,
    top_p=0.7,
    typical_p=0.2,
    repetition_penalty=0.8,
    length_penalty=0.8,
    no_repeat_ngram_size=5,
    encoder_no_repeat_ngram_size=5,
    bad_words_ids=[1, 2, 3],
    num_return_sequences=3,
    output_scores=True,
    return_dict_in_generate=True,
    forced_bos_token_id=2,
    forced_eos_token_id=3,
    remove_invalid_values=True,
    architectures=["BertModel"],
    finetuning_task="translation",
    id2label={0: "label"},
    label2id={"label": "0"},
    tokenizer_class="BertTokenizerFast",
    prefix="prefix",
    bos_token_id=6,
    pad_token_id=7,
    eos_token_id=8,
    sep_token_id=9,
    decoder_start_token_id=10,
    exponential_decay_length_penalty=(5, 1.01),
    suppress_tokens=[0, 1],
    begin_suppress_tokens=2,
    task_specific_params={"translation": "some_params"},
    problem_type="regression",
)
# The rest of their dict: settings these models do not have, refused by name.
UNSUPPORTED_COMMON_KWARGS = dict(
    pruned_heads={"a": 1},
    is_decoder=True,
    add_cross_attention=True,
    tie_encoder_decoder=True,
    chunk_size_feed_forward=5,
)


def test_config_arguments_init():
    config = ViTMAEConfig(**copy.deepcopy(CONFIG_COMMON_KWARGS))
    wrong = {}
    for key, value in CONFIG_COMMON_KWARGS.items():
        expected = {"label": 0} if key == "label2id" else value  # indices are ints here
        if getattr(config, key) != expected:
            wrong[key] = getattr(config, key)
    assert not wrong
    assert config.use_return_dict is False  # torchscript and return_dict=False: tuples
    for key, value in UNSUPPORTED_COMMON_KWARGS.items():
        with pytest.raises(ValueError, match=rf"does not support {key}="):
            ViTMAEConfig(**{key: value})


# ------------------------------------------------------------ the model tester
def test_model():
    model = TFViTMAEModel(config=get_config())
    result = model(inputs_dict()["pixel_values"], training=False)
    assert result.last_hidden_state.shape == (BATCH, SEQ_LENGTH, HIDDEN)


def test_for_pretraining():
    config = get_config()
    model = TFViTMAEForPreTraining(config)
    result = model(inputs_dict()["pixel_values"], training=False)
    assert result.logits.shape == (BATCH, NUM_PATCHES, PATCH**2 * CHANNELS)
    assert result.loss.shape == ()  # theirs: (1,); transformers' PyTorch model: ()
    # greyscale images
    config.num_channels = 1
    model = TFViTMAEForPreTraining(config)
    result = model(inputs_dict(channels=1)["pixel_values"], training=False)
    assert result.logits.shape == (BATCH, NUM_PATCHES, PATCH**2)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_model_common_attributes(model_class):
    model = model_class(get_config())
    assert isinstance(model.get_input_embeddings(), keras.layers.Layer)
    output_embeddings = model.get_output_embeddings()
    assert output_embeddings is None or isinstance(output_embeddings, keras.layers.Layer)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_forward_signature(model_class):
    arg_names = list(inspect.signature(model_class(get_config()).call).parameters)
    assert arg_names[:1] == ["pixel_values"]


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_model_main_input_name(model_class):
    first = list(inspect.signature(model_class.call).parameters)[1]
    assert model_class.main_input_name == first


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_keyword_and_dict_args(model_class):
    model, inputs, noise = model_class(get_config()), inputs_dict(), fixed_noise()
    outputs_dict = model(inputs, noise=noise)
    outputs_keywords = model(**copy.deepcopy(inputs), noise=noise)
    difference = np.asarray(outputs_dict[0]) - np.asarray(outputs_keywords[0])
    assert np.sum(np.abs(difference)) < 1e-6


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_numpy_arrays_inputs(model_class):
    model, noise = model_class(get_config()), fixed_noise()
    inputs_np = {k: np.asarray(v) for k, v in inputs_dict().items()}
    assert_outputs_same(model(inputs_np, noise=noise), model(**inputs_np, noise=noise))


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_attention_outputs(model_class):
    config = get_config(return_dict=True)
    inputs = inputs_dict()

    def check(attentions):
        assert len(attentions) == LAYERS
        assert tuple(attentions[0].shape[-3:]) == (HEADS, SEQ_LENGTH, SEQ_LENGTH)

    # The flag inside the input dict, the config's hidden states off.
    config.output_hidden_states = False
    outputs = model_class(config)({**inputs, "output_attentions": True}, training=False)
    check(outputs.attentions)
    out_len = len(outputs)
    # The flag on the config instead.
    config.output_attentions = True
    outputs = model_class(config)(inputs, training=False)
    check(outputs.attentions)
    # Both, with the hidden states too: one more output.
    config.output_hidden_states = True
    outputs = model_class(config)({**inputs, "output_attentions": True}, training=False)
    assert len(outputs) == out_len + 1
    check(outputs.attentions)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_hidden_states_output(model_class):
    inputs = inputs_dict()

    def check(model, outputs):
        assert len(outputs.hidden_states) == LAYERS + 1
        assert tuple(outputs.hidden_states[0].shape[-2:]) == (SEQ_LENGTH, HIDDEN)
        assert model.config.output_attentions is False and outputs.attentions is None

    model = model_class(get_config())
    check(model, model({**inputs, "output_hidden_states": True}))
    model = model_class(get_config(output_hidden_states=True))
    check(model, model(inputs))


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_determinism(model_class):
    """Skipped in HF (a random mask each call); with a fixed `noise`, two
    inference calls agree to their 1e-5."""
    model, inputs, noise = model_class(get_config()), inputs_dict(), fixed_noise()
    first = np.asarray(model(inputs, noise=noise, training=False)[0])
    second = np.asarray(model(inputs, noise=noise, training=False)[0])
    keep = ~(np.isnan(first) | np.isnan(second))
    assert np.max(np.abs(first[keep] - second[keep])) <= 1e-5


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_model_outputs_equivalence(model_class):
    """Skipped in HF (a random mask each call); with a fixed `noise`, the
    tuple (`return_dict=False`) and the output object hold the same tensors,
    with and without hidden states and attentions."""
    model, inputs, noise = model_class(get_config()), inputs_dict(), fixed_noise()
    for flags in ({}, {"output_hidden_states": True}, {"output_attentions": True}):
        tuple_output = model(inputs, noise=noise, return_dict=False, **flags)
        dict_output = model(inputs, noise=noise, return_dict=True, **flags).to_tuple()
        assert isinstance(tuple_output, tuple) and len(tuple_output) == len(dict_output)
        for a, b in zip(tuple_output, dict_output):
            for x, y in zip(
                a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)
            ):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# -------------------------------------------------------- PyTorch equivalence
def check_pt_tf_outputs(ours, theirs, tol=1e-4):
    """Their `check_pt_tf_outputs`: the same non-None fields, equal shapes, max diff <= tol."""
    import torch

    names = [k for k, v in theirs.items() if v is not None]
    assert list(ours.keys()) == names
    for name in names:
        expected = theirs[name]
        got = ours[name]
        pairs = zip(got, expected) if isinstance(expected, tuple) else [(got, expected)]
        if isinstance(expected, tuple):
            assert len(got) == len(expected), name
        for a, e in pairs:
            a = np.asarray(a, np.float64)
            e = e.detach().to(torch.float64).numpy()
            assert a.shape == e.shape, name
            nan = np.isnan(a) | np.isnan(e)
            a, e = np.where(nan, 0, a), np.where(nan, 0, e)
            assert np.max(np.abs(a - e), initial=0) <= tol, name


def _pt_inputs(inputs, noise):
    import torch

    return dict(
        pixel_values=torch.from_numpy(inputs["pixel_values"]),
        noise=torch.from_numpy(noise),
        output_hidden_states=True,
        output_attentions=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_pt_tf_model_equivalence(model_class, tmp_path):
    """Their `test_pt_tf_model_equivalence` (with ViTMAE's fixed noise): a
    transformers PyTorch model and ours with the same weights give the same
    outputs, hidden states and attentions included, to their 1e-4. Both
    ways through checkpoint files, and PyTorch's state dict in memory."""
    import torch
    import transformers

    encoder_only = model_class is TFViTMAEModel
    pt_class = transformers.ViTMAEModel if encoder_only else transformers.ViTMAEForPreTraining
    config = get_config(output_hidden_states=True, output_attentions=True)
    sizes = {k: v for k, v in config.to_dict().items() if k in ViTMAEConfig.STRUCTURE}
    inputs, noise = inputs_dict(), fixed_noise()

    def compare(tf_model, pt_model):
        with torch.no_grad():
            theirs = pt_model.eval()(**_pt_inputs(inputs, noise))
        ours = tf_model(inputs, noise=noise, training=False)
        check_pt_tf_outputs(ours, theirs)

    # PyTorch -> ours, in memory and from the files transformers writes.
    pt_model = torch_reference_model(encoder_only=encoder_only, **sizes)
    tf_model = model_class(config)
    load_state_dict(tf_model, {k: v.numpy() for k, v in pt_model.state_dict().items()})
    compare(tf_model, pt_model)
    pt_model.save_pretrained(tmp_path / "pt")
    flags = dict(output_hidden_states=True, output_attentions=True)
    compare(model_class.from_pretrained(tmp_path / "pt", **flags), pt_model)
    # Ours -> PyTorch, from the files we write (transformers 5 renames its
    # modules in memory and converts the Hub layout when it loads a file).
    tf_model = model_class(config, seed=3)
    tf_model.save_pretrained(tmp_path / "tf", pytorch=True)
    compare(tf_model, pt_class.from_pretrained(tmp_path / "tf", attn_implementation="eager"))


# ------------------------------------------------------------ Keras mechanics
@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_compile_tf_model(model_class, tmp_path):
    """Their ViTMAE override: a reloaded model called on a symbolic
    `keras.Input`, a Dense head on its output, the extended model compiled."""
    model = model_class(get_config())
    model(inputs_dict())  # they call before saving; nothing here needs it
    model.save_pretrained(tmp_path)
    model = model_class.from_pretrained(tmp_path)
    inputs = keras.Input(batch_shape=(3, CHANNELS, IMAGE, IMAGE), name="pixel_values")
    outputs_dict = model(inputs)
    hidden_states = outputs_dict[0]
    if model_class is TFViTMAEForPreTraining:
        hidden_states = outputs_dict["logits"]
    outputs = keras.layers.Dense(2, activation="softmax", name="outputs")(hidden_states)
    extended_model = keras.Model(inputs=[inputs], outputs=[outputs])
    extended_model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-5, epsilon=1e-08, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy("accuracy")],
    )
    assert extended_model.output_shape[-1] == 2
    # The generic form: inputs from `input_signature`, run on `dummy_inputs`,
    # saved (Keras 3: a `.keras` file; tf-keras wrote a SavedModel folder).
    signature, dummies = model.input_signature, model.dummy_inputs
    symbolic = {
        name: keras.Input(shape=spec.shape[1:], dtype=spec.dtype.name, name=name)
        for name, spec in signature.items()
        if name in dummies
    }
    functional = keras.Model(symbolic, model(symbolic)[0])
    assert functional.predict(dummies, verbose=0) is not None
    functional.save(tmp_path / "functional.keras")
    assert (tmp_path / "functional.keras").stat().st_size > 0


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_keras_save_load(model_class, tmp_path):
    """Their test saves a functional model around the main layer, with the
    noise as a second input, as tf-keras `.h5`; Keras 3 saves whole models
    as `.keras` (and ours are the serialisable layer), so that is the file."""
    inputs = {**inputs_dict(), "noise": fixed_noise()}
    symbolic = {
        name: keras.Input(tensor.shape[1:], dtype=str(tensor.dtype), name=name)
        for name, tensor in inputs.items()
    }
    main_layer = model_class(get_config())
    model = keras.Model(symbolic, outputs=main_layer(symbolic))
    outputs = model(inputs)
    model.save(tmp_path / "keras_model.keras")
    model = keras.models.load_model(tmp_path / "keras_model.keras")
    assert isinstance(model, keras.Model)
    assert_outputs_same(model(inputs), outputs)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_save_load(model_class, tmp_path):
    """The generic `test_save_load`: `save_pretrained` then `from_pretrained`
    gives the same outputs, and writes `config.json`."""
    model, inputs, noise = model_class(get_config()), inputs_dict(), fixed_noise()
    outputs = model(inputs, noise=noise)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file()
    after = model_class.from_pretrained(tmp_path)(inputs, noise=noise)
    assert_outputs_same(after, outputs)


@pytest.mark.slow
@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_saved_model(model_class, tmp_path):
    """Their slow `test_save_load` (`save_pretrained(saved_model=True)`, then
    `tf.keras.models.load_model`), `test_saved_model_creation` and
    `test_prepare_serving_output`. Keras 3 has no `saved_model=True`:
    `model.export(path)` writes the SavedModel (and `save_pretrained` refuses
    the argument, pointing there). The loaded SavedModel gives the model's
    outputs to their 1e-5, and every signature returns only tensors."""
    import tensorflow as tf

    model, inputs = model_class(get_config()), inputs_dict()
    model.export(tmp_path / "export")
    assert (tmp_path / "export" / "saved_model.pb").is_file()
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    pixels = tf.constant(inputs["pixel_values"])
    served = loaded.signatures["serving_default"](pixel_values=pixels)
    assert all(isinstance(v, tf.Tensor) for v in served.values())
    expected = model.unmasked_features(pixels)
    for name in ("cls_features", "mean_features"):
        assert max_diff(served[name], expected[name]) <= 1e-5
    if model_class is TFViTMAEForPreTraining:  # the masked forward pass, with a fixed mask
        seed = tf.constant(7, tf.int64)
        out = loaded.signatures["reconstruct_with_seed"](pixel_values=pixels, seed=seed)
        assert all(isinstance(v, tf.Tensor) for v in out.values())
        expected = model.reconstruct(pixels, seed=7)
        assert max_diff(out["reconstruction"], expected["logits"]) <= 1e-5
        np.testing.assert_array_equal(out["mask"], expected["mask"])
    with pytest.raises(TypeError, match=r"does not take saved_model: .*model\.export"):
        model.save_pretrained(tmp_path / "pretrained", saved_model=True)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_save_load_config(model_class):
    model, inputs, noise = model_class(get_config()), inputs_dict(), fixed_noise()
    outputs = model(inputs, noise=noise)
    model_config = model.get_config()
    json.dumps(model_config)  # Keras needs it JSON-able
    new_model = model_class.from_config(model.get_config())
    _ = model_class.from_config(model.config)  # a plain config too
    _ = new_model(inputs)  # build it
    new_model.set_weights(model.get_weights())
    assert_outputs_same(new_model(inputs, noise=noise), outputs)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=IDS)
def test_valid_input_signature_and_dummies(model_class):
    model = model_class(get_config())
    call_args = inspect.signature(model.call).parameters
    assert set(model.input_signature) <= set(call_args)
    assert set(model.dummy_inputs) <= set(call_args)
    assert model.dummy_inputs["pixel_values"].shape == (3, CHANNELS, IMAGE, IMAGE)
    assert tuple(model.input_signature["pixel_values"].shape) == (None, CHANNELS, IMAGE, IMAGE)


@pytest.mark.slow
def test_keras_fit():
    """Their `test_keras_fit` (which returns early here: no label columns):
    `fit` with SGD(0.0), a validation set and a per-example weight, twice
    from the same weights and seed, gives histories that agree to their
    tolerance, with a `val_` twin for every key and no NaN."""
    config = get_config()
    inputs = inputs_dict()["pixel_values"]
    weights = np.full((BATCH,), 0.5, "float32")
    histories = []
    first = TFViTMAEForPreTraining(config, seed=0)
    for _ in range(2):
        model = TFViTMAEForPreTraining(config, seed=0)
        model.set_weights(first.get_weights())
        model.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)
        history = model.fit(
            inputs,
            sample_weight=weights,
            validation_data=(inputs,),
            epochs=2,
            batch_size=BATCH,
            verbose=0,
        ).history
        histories.append(history)
    first_history, second_history = histories
    assert set(first_history) == set(second_history)
    for key in first_history:
        assert key.startswith("val_") or f"val_{key}" in first_history
        assert not np.isnan(first_history[key]).any()
        np.testing.assert_allclose(first_history[key], second_history[key], atol=1e-2, rtol=1e-3)


def test_dataset_conversion():
    """Their `test_dataset_conversion`: `prepare_tf_dataset` keeps the model's
    columns of a 🤗 Datasets dataset, drops the others, keeps every row, and
    the model runs on it; a classifier's label column becomes its target."""
    import datasets

    config = get_config()
    pixel_values = inputs_dict()["pixel_values"]
    dataset = datasets.Dataset.from_dict(
        {"pixel_values": pixel_values, "extra_column": ["foo"] * BATCH}
    )
    for model_class in MODEL_CLASSES:
        model = model_class(config)
        tf_dataset = model.prepare_tf_dataset(dataset, batch_size=BATCH, shuffle=False)
        (batch,) = list(tf_dataset)
        assert not isinstance(batch, (tuple, dict))  # the extra column is gone
        assert batch.shape[0] == BATCH
        np.testing.assert_allclose(batch, pixel_values)
        model(batch)
    labelled = dataset.add_column("labels", [i % 3 for i in range(BATCH)])
    classifier = TFViTMAEForImageClassification(config, num_labels=3)
    tf_dataset = classifier.prepare_tf_dataset(labelled, batch_size=BATCH, shuffle=False)
    ((features, labels),) = list(tf_dataset)
    assert features.shape[0] == labels.shape[0] == BATCH
    classifier.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert np.isfinite(classifier.train_on_batch(features, labels))
    with pytest.raises(ValueError, match=r"tokenizer=.* is for text models"):
        classifier.prepare_tf_dataset(labelled, tokenizer=object())
    with pytest.raises(ValueError, match=r"none of the model's inputs .* \['extra_column'\]"):
        model.prepare_tf_dataset(dataset.remove_columns("pixel_values"))
    with pytest.raises(ValueError, match=r"expects a 🤗 Datasets .* received ndarray"):
        model.prepare_tf_dataset(pixel_values)


# ---------------------------------------------------- the Hub (slow, online)
def hub_file(repo_id, filename):
    """A file of a Hub repo, or a skip that says the Hub cannot be reached."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id, filename, etag_timeout=10)
    except Exception as error:  # offline, no DNS, a proxy, or the Hub down
        pytest.skip(
            f"The Hugging Face Hub cannot be reached for {repo_id}/{filename} "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        )


# transformers' fixture: tests/fixtures/tests_samples/COCO/000000039769.png (two cats).
CATS_URL = (
    "https://raw.githubusercontent.com/huggingface/transformers/main/"
    "tests/fixtures/tests_samples/COCO/000000039769.png"
)


def cats_image(directory):
    """Their test image, from a transformers checkout (`TRANSFORMERS_SOURCE`) or GitHub."""
    import urllib.request

    from PIL import Image

    source = os.environ.get("TRANSFORMERS_SOURCE")
    local = pathlib.Path(source or "/nonexistent") / "tests/fixtures/tests_samples/COCO"
    if (local / "000000039769.png").is_file():
        return Image.open(local / "000000039769.png")
    path = pathlib.Path(directory) / "cats.png"
    try:
        with urllib.request.urlopen(CATS_URL, timeout=20) as response:
            path.write_bytes(response.read())
    except OSError as error:
        pytest.skip(f"transformers' test image cannot be downloaded ({error})")
    return Image.open(path)


@pytest.mark.slow
def test_model_from_pretrained():
    """Their `TFViTMAEModel.from_pretrained("google/vit-base-patch16-224")`:
    a transformers ViT checkpoint (`model_type: "vit"`) loads as an MAE encoder."""
    hub_file("google/vit-base-patch16-224", "config.json")
    with pytest.warns(UserWarning, match="Ignored 2 weights .* classifier"):
        model = TFViTMAEModel.from_pretrained("google/vit-base-patch16-224")
    assert model is not None and model.config.hidden_size == 768


@pytest.mark.parametrize("head", ["classifier", "pooler"])
def test_model_from_pretrained_vit_checkpoint_offline(head, tmp_path):
    """`test_model_from_pretrained` without the Hub: a tiny transformers ViT
    checkpoint loads as the MAE encoder and gives its features. A classifier's
    head is left with a warning; a pooler (which the MAE encoder has no
    place for) makes the strict load refuse, and `strict=False` loads the rest."""
    import torch
    import transformers

    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    torch.manual_seed(0)
    vit_class = transformers.ViTForImageClassification
    reference = (vit_class if head == "classifier" else transformers.ViTModel)(config).eval()
    reference.save_pretrained(tmp_path)
    if head == "classifier":
        with pytest.warns(UserWarning, match="Ignored 2 weights .* classifier.bias"):
            model = TFViTMAEModel.from_pretrained(tmp_path)
    else:
        with pytest.raises(CheckpointError, match=r"unexpected: vit.pooler.dense.bias"):
            TFViTMAEModel.from_pretrained(tmp_path)
        with pytest.warns(UserWarning, match="Partial load"):
            model = TFViTMAEModel.from_pretrained(tmp_path, strict=False)
    x = floats_tensor((2, 3, 32, 32))
    with torch.no_grad():
        encoder = reference if head == "pooler" else reference.vit
        expected = encoder(torch.from_numpy(x)).last_hidden_state.numpy()
    assert max_diff(model.unmasked_features(x)["cls_features"], expected[:, 0]) < 1e-5


@pytest.mark.slow
def test_inference_for_pretraining(tmp_path):
    """TFViTMAEModelIntegrationTest: `facebook/vit-mae-base` on transformers'
    cats image, with their noise, gives their logits slice to 1e-4. The
    pixels come from transformers' processor as in their test; ours gives
    the same pixels to within a level of 255 (tf.image.resize against PIL's)."""
    hub_file("facebook/vit-mae-base", "config.json")
    from transformers import ViTImageProcessor

    model = TFViTMAEForPreTraining.from_pretrained("facebook/vit-mae-base")
    image = cats_image(tmp_path)
    theirs = ViTImageProcessor.from_pretrained("facebook/vit-mae-base")
    pixel_values = theirs(images=image, return_tensors="np")["pixel_values"]
    noise = np.random.RandomState(2).uniform(size=(1, NUM_PATCHES_BASE))
    outputs = model(pixel_values=pixel_values, noise=noise)
    assert tuple(outputs.logits.shape) == (1, 196, 768)
    expected_slice = np.array(
        [[-0.0548, -1.7023, -0.9325], [0.3721, -0.5670, -0.2233], [0.8235, -1.3878, -0.3524]]
    )
    np.testing.assert_allclose(np.asarray(outputs.logits)[0, :3, :3], expected_slice, atol=1e-4)
    ours = model.image_processor(image)["pixel_values"]
    levels = np.abs(ours - pixel_values) * np.array(theirs.image_std)[:, None, None] * 255
    assert levels.mean() < 0.5 and levels.max() <= 8


NUM_PATCHES_BASE = (224 // 16) ** 2
