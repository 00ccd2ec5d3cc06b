"""The Taylor-mode quadratic forms (``curvature/taylor.py``): each op rule
against double backprop, in float64, and the fallback where no rule exists."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import eoskeras
from eoskeras.curvature.taylor import Unsupported, on_path, quadratic_form, recorded

rng = np.random.default_rng(0)
W = tf.constant(rng.uniform(0.5, 1.5, (3, 4)))  # positive: Log, Sqrt and Rsqrt are defined
V = tf.constant(rng.standard_normal((3, 4)))
A = tf.constant(rng.standard_normal((4, 3)))
IMAGE = tf.constant(rng.standard_normal((2, 6, 6, 3)))
LABELS = tf.constant([0, 2, 1])


def conv_filter(w):
    return tf.reshape(tf.tile(w, [1, 3])[:, :9], [3, 3, 1, 3])[:, :, :, :1] * tf.ones([1, 1, 3, 1], w.dtype)


FUNCTIONS = {
    "tanh, matmul, sum": lambda w: tf.reduce_sum(tf.tanh(A @ w) ** 2),
    "sigmoid, softplus, mean": lambda w: tf.reduce_mean(tf.nn.softplus(tf.sigmoid(w) * w)),
    "exp, log, log1p": lambda w: tf.reduce_sum(tf.exp(0.3 * w) * tf.math.log(w) + tf.math.log1p(w * w)),
    "sqrt, rsqrt, reciprocal, div": lambda w: tf.reduce_sum(tf.sqrt(w) * tf.math.rsqrt(w + 1.0)
                                                             + tf.math.reciprocal(w) + w / (w * w + 1.0)),
    "abs, relu, leaky relu, elu": lambda w: tf.reduce_sum((tf.abs(w - 1.0) + tf.nn.relu(w - 1.0)
                                                          + tf.nn.leaky_relu(w - 1.0, 0.3) + tf.nn.elu(w - 1.0)) ** 2),
    "maximum, minimum, squared difference": lambda w: tf.reduce_sum(
        tf.maximum(w, 1.0) * tf.minimum(w * w, 1.2) + tf.math.squared_difference(w, tf.transpose(A))),
    # Select (v1) with a vector condition picks rows; SelectV2 broadcasts
    "select, select v2": lambda w: tf.reduce_sum(tf.compat.v1.where(tf.constant([True, False, True]), w ** 3, w * w)
                                                 + tf.where(tf.transpose(A) > 0, tf.tanh(w), w[:1] ** 2)),
    "concat, stack, unstack, slices, gather": lambda w: tf.reduce_sum(tf.concat([w, w * w], 0)[1:4, ::2] ** 3)
    + tf.reduce_sum(tf.stack([w, tf.sin(tf.transpose(A))], 1) ** 2 * tf.stack(tf.unstack(w, axis=1)[::-1], 1)[:, None, :])
    + tf.reduce_sum(tf.gather(w, [2, 0], axis=1) ** 3),
    "reshape, transpose, pad, tile, broadcast, expand, squeeze": lambda w: tf.reduce_sum(
        tf.squeeze(tf.expand_dims(tf.pad(tf.tile(tf.transpose(tf.reshape(w, [4, 3])), [1, 2]), [[1, 0], [0, 2]]), 0))
        ** 2 * tf.broadcast_to(w[0, :1], [4, 10])),
    "batch matmul, bias add, add n": lambda w: tf.reduce_sum(tf.nn.bias_add(
        tf.linalg.matmul(tf.stack([w, w * w]), tf.stack([A, A]))[..., :3], w[:, 0]) ** 2)
    + tf.add_n([w, w * w, tf.tanh(w)])[0, 0],
    "conv, depthwise, max pool, avg pool": lambda w: tf.reduce_sum(tf.nn.max_pool2d(tf.tanh(tf.nn.conv2d(
        IMAGE, conv_filter(w), 1, "SAME")), 2, 2, "VALID") ** 2) + tf.reduce_sum(tf.nn.avg_pool2d(
            tf.nn.depthwise_conv2d(IMAGE, conv_filter(w), [1, 1, 1, 1], "VALID"), 2, 1, "SAME") ** 3),
    "softmax, log softmax, cross entropies": lambda w: tf.reduce_sum(
        tf.nn.softmax(w) ** 2 + tf.nn.log_softmax(w * w)) + tf.reduce_sum(
        tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=A[:3] @ w[:, :3] * w[:, 1:], labels=LABELS)[0])
    + tf.reduce_sum(tf.raw_ops.SoftmaxCrossEntropyWithLogits(features=w * w, labels=tf.nn.softmax(tf.transpose(A)))[0])
    + tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(LABELS, tf.tanh(w))),  # as tf.nn builds it now
    "stop gradient": lambda w: tf.reduce_sum(w ** 3 * tf.stop_gradient(w) ** 2),
    # float32 on the way: the two agree to its rounding only
    "casts": lambda w: tf.reduce_sum(tf.cast(tf.cast(w, tf.float32) ** 3, tf.float64)),
}


@tf.function(autograph=False)
def both(w, v, f):
    with recorded() as ops:
        source = tf.identity(w)
        value = f(source)
    taylor = quadratic_form(on_path(ops, [source]), value)([source], [v])
    with tf.GradientTape() as outer:
        outer.watch(w)
        with tf.GradientTape() as inner:
            inner.watch(w)
            loss = f(w)
        along = tf.reduce_sum(inner.gradient(loss, w) * v)
    return taylor, tf.reduce_sum(outer.gradient(along, w) * v)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_each_rule_gives_the_second_derivative_of_double_backprop(name):
    taylor, reverse = (float(t) for t in both(W, V, FUNCTIONS[name]))
    assert reverse != 0.0
    assert taylor == pytest.approx(reverse, rel=1e-6 if name == "casts" else 1e-12)


@pytest.mark.parametrize("loss,refused", [
    (lambda w: tf.reduce_sum(tf.math.erf(w)), "Erf"),  # no rule
    (lambda w: tf.reduce_sum(tf.transpose(A) ** w), "Pow on a derivative"),  # the exponent is taken as fixed
    # (the ops themselves: with op determinism on, tf.nn builds cross-entropy of other ops)
    (lambda w: tf.reduce_sum(tf.raw_ops.SoftmaxCrossEntropyWithLogits(features=A[:3] @ w, labels=tf.nn.softmax(w))[0]),
     "SoftmaxCrossEntropyWithLogits on a derivative"),  # so are the labels
    (lambda w: tf.reduce_sum(tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=w, labels=LABELS)[1]),
     "Sum on a derivative"),  # the gradient output has no rule
])
def test_what_has_no_rule_is_refused_before_anything_is_built(loss, refused):
    @tf.function(autograph=False)
    def attempt(w):
        with recorded() as ops:
            source = tf.identity(w)
            loss(source)
        on_path(ops, [source])

    with pytest.raises(Unsupported, match=refused):
        attempt(W)


def test_only_the_ops_a_derivative_reaches_are_walked():
    with tf.Graph().as_default():
        w = tf.constant(W.numpy())
        with recorded() as ops:
            source = tf.identity(w)
            fixed = tf.math.erf(A.numpy())  # no rule, but no derivative reaches it
            truncated = tf.cast(tf.cast(source, tf.int32), source.dtype)  # through integers: no derivative
            tf.reduce_sum(tf.tanh(source) * truncated @ fixed)
        types = [op.type for op in on_path(ops, [source])]
    assert sorted(types) == ["Cast", "MatMul", "Mul", "Sum", "Tanh"]


def test_an_oracle_falls_back_to_double_backprop_where_an_op_has_no_rule():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="gelu", dtype="float64"),
                              keras.layers.Dense(3, dtype="float64")])
    x = np.random.default_rng(1).standard_normal((20, 5))
    y = np.arange(20) % 3
    oracle = eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=20, dtype="float64")
    vectors = np.random.default_rng(2).standard_normal((oracle.dim, 4))
    forms = oracle.quadratic_forms(vectors)
    assert oracle.forms_method.startswith("reverse (no forward rule for Erf")
    assert eoskeras.hutchinson_trace(oracle, 3).info["quadratic_forms"] == oracle.forms_method
    np.testing.assert_allclose(forms, np.einsum("ij,ij->j", vectors, oracle.hvp_block(vectors)), rtol=1e-11)
