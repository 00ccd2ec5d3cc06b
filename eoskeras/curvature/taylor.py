"""Quadratic forms vᵀHv by second-order forward (Taylor) mode over the loss's own ops.

Hutchinson's trace needs vᵀHv = d²/dt² L(w + t v) at t = 0, not H v. Double
backprop (what H v costs) multiplies each weight matrix's input twice per
vector, forward (X V) and back (Xᵀ U); carrying the first and second
derivatives along t forward through the ops needs only the forward products
(X V once, and for a hidden layer A V, Ȧ W, Ä W, Ȧ V). On the peer
benchmark's 784-200-200-10 MLP that is 1.27 of 2.21 G multiply-adds a vector.
TensorFlow has no such mode: nested ``ForwardAccumulator``s compute the
first-order tangents twice, so they cost as much as double backprop.

So this module walks the ops that the loss created in the graph being traced,
in creation order (which is topological), and applies a rule per op type to
(first, second) derivative pairs; ``None`` is a zero derivative. Only the
ops a derivative from the weights reaches are walked (``on_path``); one
without a rule there raises ``Unsupported``, before anything is built: the oracle then falls back to
double backprop, so the set of rules bounds speed, never correctness.
``StopGradient`` and ops whose outputs are not differentiable give zero, as
TensorFlow's own gradients do.

Example (the oracle does this for a model's loss, per micro-batch):

```python
@tf.function(autograph=False)
def along(w, v):
    with recorded() as ops:
        source = tf.identity(w)  # this graph's own tensor, which the loss's ops start from
        loss = tf.reduce_sum(tf.tanh(source) ** 2)
    path = on_path(ops, [source])  # Unsupported before anything is built
    return second_derivative(path, loss, [source], [v])  # vᵀ H v

along(tf.constant([0.5, -1.0]), tf.constant([1.0, 2.0]))
```
"""
from __future__ import annotations

import contextlib
import functools
import operator
from typing import Callable, Iterator, Optional

import tensorflow as tf

Tensor = Optional[tf.Tensor]
Pair = tuple[Tensor, Tensor]  # first and second derivative along t; None where zero


class Unsupported(Exception):
    """The loss has an op on the weights' path that no rule covers."""


@contextlib.contextmanager
def recorded() -> Iterator[list[tf.Operation]]:
    """The ops created in the current graph inside the block, in creation order."""
    graph = tf.compat.v1.get_default_graph()
    before = len(graph.get_operations())
    ops: list[tf.Operation] = []
    yield ops
    ops.extend(graph.get_operations()[before:])


def on_path(ops: list[tf.Operation], sources: list[tf.Tensor]) -> list[tf.Operation]:
    """The ops of ``ops`` (``recorded``) that a derivative from ``sources``
    reaches, for ``second_derivative``. Raises ``Unsupported`` where one has
    no rule, or takes the derivative where its rule needs a fixed value,
    without building anything (a graph being traced keeps what is built)."""
    reached, without_rule, path = {t.ref() for t in sources}, set(), []
    for op in ops:
        hit = [t.ref() in reached for t in op.inputs]
        if op.type in _NO_DERIVATIVE:
            continue
        if any(t.ref() in without_rule for t in op.inputs) or any(hit[i] for i in _FIXED_INPUTS.get(op.type, ())):
            raise Unsupported(f"{op.type} on a derivative it has no rule for")
        if not any(hit):
            continue
        if op.type not in _RULES:
            raise Unsupported(op.type)
        ruled = _RULED_OUTPUTS.get(op.type, range(len(op.outputs)))
        for k, t in enumerate(op.outputs):
            if t.dtype.is_floating:
                (reached if k in ruled else without_rule).add(t.ref())
        path.append(op)
    return path


def second_derivative(path: list[tf.Operation], loss: tf.Tensor, sources: list[tf.Tensor],
                      directions: list[tf.Tensor]) -> tf.Tensor:
    """d²/dt² of ``loss`` at t = 0 when each of ``sources`` moves by t times
    its direction, through ``path`` (``on_path``, in the graph being traced);
    a zero where the loss is linear along it."""
    pairs: dict = {t.ref(): (v, None) for t, v in zip(sources, directions)}
    for op in path:
        given = [pairs.get(t.ref()) for t in op.inputs]
        for t, pair in zip(op.outputs, _RULES[op.type](op, given)):
            if pair is not None and t.dtype.is_floating and (pair[0] is not None or pair[1] is not None):
                pairs[t.ref()] = pair
    second = pairs.get(loss.ref(), (None, None))[1]
    return tf.zeros_like(loss) if second is None else second


# ----------------------------------------------------------------- helpers
def _total(*terms: Tensor) -> Tensor:
    present = [t for t in terms if t is not None]
    return functools.reduce(operator.add, present) if present else None


def _like(t: Tensor, z: tf.Tensor) -> Tensor:
    """``t`` broadcast to ``z``'s shape (an addend's derivative may be smaller)."""
    if t is None or (t.shape.is_fully_defined() and t.shape == z.shape):
        return t
    return tf.broadcast_to(t, tf.shape(z))


def _scale(c: Tensor, t: Tensor) -> Tensor:
    return None if c is None or t is None else c * t


def _linear(apply: Callable[[tf.Operation, tf.Tensor], tf.Tensor]) -> Callable:
    """An op linear in its first input (the others are shapes, axes, indices)."""
    def rule(op, given):
        return [tuple(None if t is None else apply(op, t) for t in given[0] or (None, None))]
    return rule


def _pointwise(coefficients: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, Tensor]]) -> Callable:
    """z = f(a) elementwise: ż = f′ȧ, z̈ = f″ȧ² + f′ä; ``coefficients(a, z)`` gives (f′, f″)."""
    def rule(op, given):
        (first, second), a, z = given[0], op.inputs[0], op.outputs[0]
        f1, f2 = coefficients(a, z)
        return [(_scale(f1, first), _total(_scale(f2, None if first is None else first * first), _scale(f1, second)))]
    return rule


def _bilinear(product: Callable[[tf.Operation, tf.Tensor, tf.Tensor], tf.Tensor]) -> Callable:
    """z = a ⊗ b (a product linear in each): ż = ȧ⊗b + a⊗ḃ, z̈ = ä⊗b + 2ȧ⊗ḃ + a⊗b̈."""
    def rule(op, given):
        (a1, a2), (b1, b2) = (p or (None, None) for p in given[:2])
        a, b = op.inputs[0], op.inputs[1]
        times = lambda u, w: None if u is None or w is None else product(op, u, w)  # noqa: E731
        cross = times(a1, b1)  # each term has one factor of each operand: the output's shape
        return [(_total(times(a1, b), times(a, b1)), _total(times(a2, b), None if cross is None else 2 * cross,
                                                           times(a, b2)))]
    return rule


def _sum_rule(signs: tuple[float, ...]) -> Callable:
    def rule(op, given):
        z = op.outputs[0]
        orders = []
        for k in range(2):
            terms = [None if p is None or p[k] is None else (p[k] if s > 0 else -p[k]) for p, s in zip(given, signs)]
            orders.append(_like(_total(*terms), z))
        return [tuple(orders)]
    return rule


def _add_n(op, given):
    return _sum_rule((1.0,) * len(given))(op, given)


def _quotient(op, given):
    # z = a / b: ż = (ȧ − z ḃ) / b, z̈ = (ä − 2 ż ḃ − z b̈) / b.
    (a1, a2), (b1, b2) = (p or (None, None) for p in given)
    b, z = op.inputs[1], op.outputs[0]
    first = _like(_total(a1, None if b1 is None else -z * b1), z)
    first = None if first is None else first / b
    second = _total(a2, None if first is None or b1 is None else -2 * first * b1, None if b2 is None else -z * b2)
    return [(first, None if second is None else _like(second / b, z))]


def _power(op, given):
    # z = a^b with the exponent fixed: f′ = b a^(b−1), f″ = b (b−1) a^(b−2) (zero where the factor is).
    b = op.inputs[1]

    def coefficients(a, z):
        f1 = tf.where(tf.equal(b, 0), tf.zeros_like(a), b * tf.pow(a, b - 1))
        return f1, tf.where(tf.equal(b * (b - 1), 0), tf.zeros_like(a), b * (b - 1) * tf.pow(a, b - 2))
    return _pointwise(coefficients)(op, given[:1])


def _squared_difference(op, given):
    # z = (a − b)²: with d = a − b, ż = 2 d ḋ, z̈ = 2 ḋ² + 2 d d̈.
    (a1, a2), (b1, b2) = (p or (None, None) for p in given)
    d, z = op.inputs[0] - op.inputs[1], op.outputs[0]
    d1, d2 = _total(a1, None if b1 is None else -b1), _total(a2, None if b2 is None else -b2)
    return [(_like(_scale(2 * d, d1), z), _like(_total(None if d1 is None else 2 * d1 * d1, _scale(2 * d, d2)), z))]


def _chosen(mask: tf.Tensor, given: list, inputs: list[tf.Tensor], z: tf.Tensor) -> list[Pair]:
    """Each derivative from the input ``mask`` chooses (the first where True):
    piecewise, so no curvature of its own."""
    orders = []
    for k in range(2):
        ta, tb = (None if p is None else p[k] for p in given)
        if ta is None and tb is None:
            orders.append(None)
            continue
        ta, tb = (_like(tf.zeros_like(x) if t is None else t, z) for t, x in ((ta, inputs[0]), (tb, inputs[1])))
        orders.append(tf.where(_like(mask, z), ta, tb))
    return [tuple(orders)]


def _select(keep_first: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Callable:
    """Maximum/Minimum: ties go to the first input, as in TensorFlow's gradient."""
    def rule(op, given):
        return _chosen(keep_first(op.inputs[0], op.inputs[1]), given, op.inputs[:2], op.outputs[0])
    return rule


def _where(op, given):
    # Select/SelectV2 (tf.where; TensorFlow's deterministic cross-entropy uses them). Select's
    # vector condition picks rows, where tf.where would broadcast it along the last axis.
    condition, z = op.inputs[0], op.outputs[0]
    if op.type == "Select" and condition.shape.rank == 1 and z.shape.rank != 1:
        condition = tf.reshape(condition, tf.concat([tf.shape(condition), tf.ones([tf.rank(z) - 1], tf.int32)], 0))
    return _chosen(condition, given[1:], op.inputs[1:], z)


def _joined(build: Callable[[tf.Operation, list[tf.Tensor]], tf.Tensor], count: Callable[[tf.Operation], int]):
    """Concat/Pack: the derivatives joined like the values (zeros where none)."""
    def rule(op, given):
        n = count(op)
        orders = []
        for k in range(2):
            parts = [None if p is None else p[k] for p in given[:n]]
            orders.append(None if all(t is None for t in parts) else build(
                op, [tf.zeros_like(x) if t is None else t for t, x in zip(parts, op.inputs[:n])]))
        return [tuple(orders)]
    return rule


def _unstacked(op, given):
    first, second = given[0]
    split = lambda t: [None] * len(op.outputs) if t is None else (  # noqa: E731
        tf.unstack(t, num=op.get_attr("num"), axis=op.get_attr("axis")))
    return list(zip(split(first), split(second)))


def _softmax_cross_entropy(op, given):
    """ℓ = logsumexp(z) − ⟨labels, z⟩ per row, labels fixed: ℓ̇ = ⟨p − labels, ż⟩,
    ℓ̈ = ⟨p − labels, z̈⟩ + ⟨p, ż²⟩ − ⟨p, ż⟩². The second output (the
    gradient) has no rule."""
    logits, labels = op.inputs[0], op.inputs[1]
    first, second = given[0]
    p = tf.nn.softmax(logits)
    if op.type == "SparseSoftmaxCrossEntropyWithLogits":
        labels = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    residual = p - labels
    row = lambda t: tf.reduce_sum(t, axis=-1)  # noqa: E731
    loss_first = None if first is None else row(residual * first)
    mean_first = None if first is None else row(p * first)
    curvature = None if first is None else row(p * first * first) - mean_first * mean_first
    return [(loss_first, _total(None if second is None else row(residual * second), curvature)), None]


def _log_softmax_pair(p: tf.Tensor, first: Tensor, second: Tensor) -> Pair:
    """The derivatives of y = log softmax(z), p = softmax(z): ẏ = ż − ⟨p, ż⟩,
    ÿ = z̈ − ⟨p, z̈⟩ − (⟨p, ż²⟩ − ⟨p, ż⟩²)."""
    mean = lambda t: tf.reduce_sum(p * t, axis=-1, keepdims=True)  # noqa: E731
    centred = None if second is None else second - mean(second)
    if first is None:
        return None, centred
    mean_first = mean(first)
    return first - mean_first, _total(centred, mean_first * mean_first - mean(first * first))


def _log_softmax(op, given):
    return [_log_softmax_pair(tf.exp(op.outputs[0]), *given[0])]


def _softmax(op, given):
    # s = exp(y), y = log softmax(z): ṡ = s ẏ, s̈ = s (ẏ² + ÿ).
    s = op.outputs[0]
    y1, y2 = _log_softmax_pair(s, *given[0])
    return [(_scale(s, y1), _scale(s, _total(None if y1 is None else y1 * y1, y2)))]


def _matmul(op, a, b):
    return tf.linalg.matmul(a, b, transpose_a=op.get_attr("transpose_a"), transpose_b=op.get_attr("transpose_b"))


def _batch_matmul(op, a, b):
    return tf.linalg.matmul(a, b, adjoint_a=op.get_attr("adj_x"), adjoint_b=op.get_attr("adj_y"))


def _conv_attrs(op) -> dict:
    return {name: op.get_attr(name) for name in ("strides", "padding", "explicit_paddings", "data_format",
                                                  "dilations")}


def _conv2d(op, a, b):
    return tf.raw_ops.Conv2D(input=a, filter=b, use_cudnn_on_gpu=op.get_attr("use_cudnn_on_gpu"), **_conv_attrs(op))


def _depthwise(op, a, b):
    return tf.raw_ops.DepthwiseConv2dNative(input=a, filter=b, **_conv_attrs(op))


def _pool_attrs(op) -> dict:
    return {name: op.get_attr(name) for name in ("ksize", "strides", "padding", "data_format")}


def _max_pool(op, given):
    # Piecewise linear: each derivative taken where the maximum is (MaxPoolGradGrad selects it).
    a, z = op.inputs[0], op.outputs[0]
    select = lambda t: None if t is None else tf.raw_ops.MaxPoolGradGrad(  # noqa: E731
        orig_input=a, orig_output=z, grad=t, **_pool_attrs(op))
    return [tuple(select(t) for t in given[0])]


def _bias_add(op, given):
    (a1, a2), (b1, b2) = (p or (None, None) for p in given)
    fmt, z = op.get_attr("data_format").decode(), op.outputs[0]

    def order(ta, tb):
        if tb is None:
            return ta
        return tf.nn.bias_add(tf.zeros_like(z) if ta is None else ta, tb, data_format=fmt)
    return [(order(a1, b1), order(a2, b2))]


def _strided_slice(op, t):
    masks = {name: op.get_attr(name) for name in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                                                   "shrink_axis_mask")}
    return tf.raw_ops.StridedSlice(input=t, begin=op.inputs[1], end=op.inputs[2], strides=op.inputs[3], **masks)


def _relu(a, z):
    return tf.cast(a > 0, a.dtype), None


def _leaky(op, given):
    alpha = op.get_attr("alpha")
    return _pointwise(lambda a, z: (tf.where(a > 0, tf.ones_like(a), tf.fill(tf.shape(a), tf.cast(alpha, a.dtype))),
                                    None))(op, given)


def _sigmoid(a, z):
    f1 = z * (1 - z)
    return f1, f1 * (1 - 2 * z)


_POINTWISE: dict[str, Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, Tensor]]] = {
    "Tanh": lambda a, z: (1 - z * z, -2 * z * (1 - z * z)),
    "Sigmoid": _sigmoid,
    "Relu": _relu,
    "Softplus": lambda a, z: (tf.sigmoid(a), tf.sigmoid(a) * (1 - tf.sigmoid(a))),
    "Exp": lambda a, z: (z, z),
    "Log": lambda a, z: (1 / a, -1 / (a * a)),
    "Log1p": lambda a, z: (1 / (1 + a), -1 / ((1 + a) * (1 + a))),
    "Square": lambda a, z: (2 * a, 2 * tf.ones_like(a)),
    "Sqrt": lambda a, z: (0.5 / z, -0.25 / (z * z * z)),
    "Rsqrt": lambda a, z: (-0.5 * z * z * z, 0.75 * z * z * z * z * z),
    "Reciprocal": lambda a, z: (-z * z, 2 * z * z * z),
    "Inv": lambda a, z: (-z * z, 2 * z * z * z),
    "Abs": lambda a, z: (tf.sign(a), None),
    "Elu": lambda a, z: (tf.where(a > 0, tf.ones_like(a), z + 1), tf.where(a > 0, tf.zeros_like(a), z + 1)),
}

_LINEAR: dict[str, Callable[[tf.Operation, tf.Tensor], tf.Tensor]] = {
    "Identity": lambda op, t: t,
    "Neg": lambda op, t: -t,
    "Snapshot": lambda op, t: t,
    "EnsureShape": lambda op, t: t,
    "Cast": lambda op, t: tf.cast(t, op.get_attr("DstT")),
    "Reshape": lambda op, t: tf.reshape(t, op.inputs[1]),
    "Squeeze": lambda op, t: tf.squeeze(t, axis=op.get_attr("squeeze_dims") or None),
    "ExpandDims": lambda op, t: tf.expand_dims(t, op.inputs[1]),
    "Transpose": lambda op, t: tf.transpose(t, op.inputs[1]),
    "Sum": lambda op, t: tf.reduce_sum(t, op.inputs[1], keepdims=op.get_attr("keep_dims")),
    "Mean": lambda op, t: tf.reduce_mean(t, op.inputs[1], keepdims=op.get_attr("keep_dims")),
    "Slice": lambda op, t: tf.slice(t, op.inputs[1], op.inputs[2]),
    "StridedSlice": _strided_slice,
    "GatherV2": lambda op, t: tf.gather(t, op.inputs[1], axis=op.inputs[2], batch_dims=op.get_attr("batch_dims")),
    "Pad": lambda op, t: tf.pad(t, op.inputs[1]),
    "PadV2": lambda op, t: tf.pad(t, op.inputs[1]),
    "Tile": lambda op, t: tf.tile(t, op.inputs[1]),
    "BroadcastTo": lambda op, t: tf.broadcast_to(t, op.inputs[1]),
    "AvgPool": lambda op, t: tf.raw_ops.AvgPool(value=t, **_pool_attrs(op)),
}

# Inputs whose rule takes them as fixed values (exponents, labels, pad values), and the
# outputs a rule gives (the rest have none): a derivative into or out of them is unsupported.
_FIXED_INPUTS = {"Pow": (1,), "PadV2": (2,), "SoftmaxCrossEntropyWithLogits": (1,),
                 "SparseSoftmaxCrossEntropyWithLogits": (1,)}
_RULED_OUTPUTS = {"SoftmaxCrossEntropyWithLogits": (0,), "SparseSoftmaxCrossEntropyWithLogits": (0,)}

# Outputs with zero derivative: not differentiable, or cut off as TensorFlow's gradients cut them.
_NO_DERIVATIVE = frozenset({
    "Shape", "ShapeN", "Size", "Rank", "ZerosLike", "OnesLike", "StopGradient", "ArgMax", "ArgMin", "Equal",
    "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual", "Sign", "Floor", "Ceil", "Round", "IsFinite", "IsNan",
    "LogicalAnd", "LogicalOr", "LogicalNot", "OneHot",
})

_RULES: dict[str, Callable[[tf.Operation, list], list]] = {
    **{name: _pointwise(coefficients) for name, coefficients in _POINTWISE.items()},
    **{name: _linear(apply) for name, apply in _LINEAR.items()},
    "LeakyRelu": _leaky,
    "AddV2": _sum_rule((1.0, 1.0)),
    "Add": _sum_rule((1.0, 1.0)),
    "Sub": _sum_rule((1.0, -1.0)),
    "AddN": _add_n,
    "BiasAdd": _bias_add,
    "Mul": _bilinear(lambda op, a, b: a * b),
    "MatMul": _bilinear(_matmul),
    "BatchMatMulV2": _bilinear(_batch_matmul),
    "BatchMatMulV3": _bilinear(_batch_matmul),
    "Conv2D": _bilinear(_conv2d),
    "DepthwiseConv2dNative": _bilinear(_depthwise),
    "RealDiv": _quotient,
    "Div": _quotient,
    "SquaredDifference": _squared_difference,
    "Pow": _power,
    "Maximum": _select(lambda a, b: a >= b),
    "Minimum": _select(lambda a, b: a <= b),
    "Select": _where,
    "SelectV2": _where,
    "ConcatV2": _joined(lambda op, ts: tf.concat(ts, axis=op.inputs[-1]), lambda op: len(op.inputs) - 1),
    "Pack": _joined(lambda op, ts: tf.stack(ts, axis=op.get_attr("axis")), lambda op: len(op.inputs)),
    "Unpack": _unstacked,
    "MaxPool": _max_pool,
    "SoftmaxCrossEntropyWithLogits": _softmax_cross_entropy,
    "SparseSoftmaxCrossEntropyWithLogits": _softmax_cross_entropy,
    "LogSoftmax": _log_softmax,
    "Softmax": _softmax,
}
