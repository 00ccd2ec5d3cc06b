"""Model zoo: catalog agreement, parameter counts, seeds, options, shapes, init."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from eoskeras.models.catalog import MODEL_OPTIONS, MODELS, OPTION_TYPES

keras = pytest.importorskip("keras")
from eoskeras.models import build_model  # noqa: E402
from eoskeras.models.registry import BUILDERS  # noqa: E402
from eoskeras.models.resnets import zero_pad_shortcut  # noqa: E402

CIFAR = (32, 32, 3)
MNIST = (28, 28, 1)


def trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def tiny(name: str) -> dict:
    """Small but complete variants, so every builder runs in milliseconds."""
    options = {"width": 2} if "width" in MODEL_OPTIONS[name] else {}
    if "depth" in MODEL_OPTIONS[name] and name.startswith("resnet"):
        options["depth"] = 1
    return options


def test_catalog_and_package_import_without_keras():
    code = ("import sys, eoskeras.models, eoskeras.models.catalog; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_matches_catalog_both_ways():
    assert set(BUILDERS) == set(MODELS) == set(MODEL_OPTIONS)
    for name, entry in BUILDERS.items():
        assert set(entry.defaults) == set(MODEL_OPTIONS[name]), name
        assert set(MODEL_OPTIONS[name]) <= set(OPTION_TYPES), name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_and_maps_inputs_to_logits(name):
    shape = MNIST if name.startswith(("mlp", "fc")) else CIFAR
    model = build_model(name, shape, 7, seed=3, **tiny(name))
    assert model.built and model.input_shape == (None, *shape)
    out = model(np.random.default_rng(0).normal(size=(2, *shape)).astype("float32"), training=False)
    assert tuple(out.shape) == (2, 7)
    assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize(("name", "shape", "count", "advertised"), [
    ("vgg10_base8_bn", CIFAR, 32_782, "32.8k"),
    ("resnet20_base8", CIFAR, 68_050, "68k"),
    ("mlp3_nh32", MNIST, 27_562, "27.6k"),
    ("fc-tanh", CIFAR, 656_810, None),
    ("cnn-relu", CIFAR, 30_634, None),
    ("cnn-relu-bn", CIFAR, 30_762, None),
    ("resnet32", CIFAR, 464_154, None),
    ("vgg11", CIFAR, 9_750_922, None),
    ("vgg11-bn", CIFAR, 9_756_426, None),
])
def test_parameter_counts(name, shape, count, advertised):
    # Counts worked out by hand, e.g. vgg10_base8_bn: conv kernels 30,168 + conv
    # biases 168 + BN scale/shift 344 + Dense(512->4) 2,052 + Dense(4->10) 50.
    n = trainable(build_model(name, shape, 10))
    assert n == count
    if advertised:
        digits = len(advertised.split(".")[1].rstrip("k")) if "." in advertised else 0
        assert f"{round(n / 1000, digits):.{digits}f}k" == advertised


def test_width_and_depth_scale_the_mlp_as_the_formula_says():
    w, depth, d_in, classes = 16, 2, 784, 10
    expected = (d_in + 1) * w + (depth - 1) * (w + 1) * w + (w + 1) * classes
    assert trainable(build_model("mlp3_nh32", MNIST, classes, width=w, depth=depth)) == expected


@pytest.mark.parametrize("name", ["vgg10_base8_bn", "resnet20_base8", "mlp3_nh32", "cnn-tanh-bn"])
def test_seed_determines_weights_and_leaves_global_rng_alone(name):
    shape = MNIST if name == "mlp3_nh32" else CIFAR
    state = np.random.get_state()[1].copy()
    first, again, other = (build_model(name, shape, 10, seed=s, **tiny(name)).get_weights()
                           for s in (5, 5, 6))
    assert np.array_equal(state, np.random.get_state()[1])
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize(("options", "match"), [
    ({"depth": 3}, "unknown option 'depth'; allowed: width, activation, norm"),
    ({"dropout": 0.1}, "unknown option 'dropout'"),
    ({"width": 0}, "width=0; expected a positive integer"),
    ({"width": True}, "width=True"),
    ({"activation": "swish"}, "activation='swish'; expected one of relu"),
    ({"norm": "instance"}, "norm='instance'"),
])
def test_options_are_validated(options, match):
    with pytest.raises(ValueError, match=match):
        build_model("vgg11", CIFAR, 10, **options)


def test_bad_names_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="unknown model 'vgg13'"):
        build_model("vgg13", CIFAR, 10)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("cnn-relu", (32, 0, 3), 10)
    with pytest.raises(ValueError, match="seed"):
        build_model("cnn-relu", CIFAR, 10, seed=-1)
    with pytest.raises(ValueError, match="at least 32x32"):
        build_model("vgg11", (16, 16, 3), 10, width=2)


def _layer_kinds(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers[1:]]


def test_layer_order_follows_each_recipe():
    assert _layer_kinds(build_model("cnn-relu-bn", CIFAR, 10)) == [
        "Conv2D", "Activation", "BatchNormalization", "MaxPooling2D"] * 2 + ["Flatten", "Dense"]
    vgg10 = _layer_kinds(build_model("vgg10_base8_bn", CIFAR, 10))
    block = ["Conv2D", "BatchNormalization", "Activation"] * 3 + ["MaxPooling2D"]
    assert vgg10 == block * 3 + ["Flatten", "Dense", "BatchNormalization", "Activation", "Dense"]
    assert _layer_kinds(build_model("fc-elu", MNIST, 10)) == ["Flatten"] + ["Dense", "Activation"] * 2 + ["Dense"]


@pytest.mark.parametrize(("name", "norm", "layer"), [
    ("cnn-relu", "group", "GroupNormalization"),
    ("resnet20_base8", "layer", "GroupNormalization"),
    ("mlp3_nh32", "layer", "LayerNormalization"),
    ("fc-relu", "batch", "BatchNormalization"),
    ("vgg10_base8_bn", "none", None),
])
def test_norm_option_swaps_the_normalisation(name, norm, layer):
    shape = MNIST if name.startswith(("mlp", "fc")) else CIFAR
    kinds = set(_layer_kinds(build_model(name, shape, 10, norm=norm, **tiny(name))))
    norms = kinds & {"BatchNormalization", "LayerNormalization", "GroupNormalization"}
    assert norms == ({layer} if layer else set())


def _kernel(model, layer_name):
    return np.asarray(model.get_layer(layer_name).kernel), model.get_layer(layer_name)


def test_initialisation_schemes():
    # Paper: LeCun normal (truncated), zero biases.
    w, layer = _kernel(build_model("mlp3_nh32", MNIST, 10), "dense1")
    assert w.std() == pytest.approx(784**-0.5, rel=0.03)
    assert np.abs(w).max() <= 2 * 784**-0.5 * 1.14  # truncated at 2 sd of the untruncated draw
    assert not np.asarray(layer.bias).any()
    # Cohen's fc nets: PyTorch's default U(+-1/sqrt(fan_in)) for kernels and biases.
    w, layer = _kernel(build_model("fc-tanh", CIFAR, 10), "dense1")
    bound = 3072**-0.5
    assert np.abs(w).max() <= bound and w.std() == pytest.approx(bound / 3**0.5, rel=0.01)
    bias = np.asarray(layer.bias)
    assert np.abs(bias).max() <= bound and bias.std() > bound / 3
    # Cohen's VGG: conv kernels N(0, 2 / (9 out_channels)), zero biases.
    w, layer = _kernel(build_model("vgg11", CIFAR, 10, width=16), "block4_conv2")
    assert w.std() == pytest.approx((2 / (9 * 128)) ** 0.5, rel=0.02)
    assert not np.asarray(layer.bias).any()
    # ResNet-32: He normal (fan in), no conv biases.
    w, layer = _kernel(build_model("resnet32", CIFAR, 10), "stage3_block2_conv1")
    assert w.std() == pytest.approx((2 / (9 * 64)) ** 0.5, rel=0.02)
    assert not layer.use_bias


def test_zero_pad_shortcut_subsamples_and_pads_symmetrically():
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, zero_pad_shortcut(inputs, 8, 2, "s"))
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 4)).astype("float32")
    expected = np.zeros((2, 3, 3, 8), dtype="float32")
    expected[..., 2:6] = x[:, ::2, ::2, :]
    np.testing.assert_array_equal(np.asarray(model(x)), expected)
    assert model.count_params() == 0


def test_models_clone_layer_by_layer():
    model = build_model("resnet20_base8", (8, 8, 3), 10, width=2, depth=1)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(clone(x, training=False)),
                               np.asarray(model(x, training=False)), rtol=1e-6)


def test_models_follow_the_dtype_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        model = build_model("cnn-relu-bn", CIFAR, 10, width=2)
    finally:
        keras.config.set_dtype_policy(previous)
    assert {w.dtype for w in model.weights} == {"float64"}
    assert model.inputs[0].dtype == "float64"
