"""Quadratic forms vᵀHv by Taylor mode over the loss's own ops.

Hutchinson's trace needs vᵀHv = d²/dt² L(w + t v) at t = 0, not H v. Double
backprop (what H v costs) multiplies each weight matrix's input twice per
vector, forward (X V) and back (Xᵀ U). Taylor mode needs only forward
products: first derivatives along t are carried forward through the ops (X V
once; for a hidden layer Ȧ W and A V). An op's second derivative is linear
in its inputs' second derivatives plus a local term (f″ȧ² for a pointwise f,
2ȧ⊗ḃ for a product: Ȧ V), so the loss's is the sum over ops of each local
term contracted with the loss's gradient with respect to that op's output
(its adjoint). The adjoints take one backward pass, shared by every
direction, as do each pointwise op's f′ and adjoint ⊙ f″; nothing second-order
is pushed through the weights. On the peer benchmark's 784-200-200-10 MLP
that is 1.13 G multiply-adds a vector, against 2.26 G by double backprop and
1.30 G were second derivatives carried forward too. TensorFlow has no such mode:
nested ``ForwardAccumulator``s compute the first-order tangents twice, so
they cost as much as double backprop.

So this module walks the ops that the loss created in the graph being traced,
in creation order (which is topological), and applies a rule per op type
(for a pointwise op, its f′ and f″) to derivatives along t; ``None`` is a
zero derivative. Only the ops a derivative from the weights reaches are
walked (``on_path``); one without a rule there raises ``Unsupported``,
before anything is built: the oracle then falls back to double backprop, so
the set of rules bounds speed, never correctness. ``StopGradient`` and ops
whose outputs are not differentiable give zero, as TensorFlow's own
gradients do.

Example (the oracle does this for a model's loss, per micro-batch):

```python
@tf.function(autograph=False)
def along(w, v):
    with recorded() as ops:
        source = tf.identity(w)  # this graph's own tensor, which the loss's ops start from
        loss = tf.reduce_sum(tf.tanh(source) ** 2)
    form = quadratic_form(on_path(ops, [source]), loss)  # Unsupported before anything is built
    return form([source], [v])  # vᵀ H v

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
# What a rule gives per output: its first derivative along t, and its local term (its
# second derivative were its inputs' second derivatives zero); None where zero.
Pair = tuple[Tensor, Tensor]


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
    reaches, for ``quadratic_form``. Raises ``Unsupported`` where one has
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
        if op.type not in _RULES and op.type not in _COEFFICIENTS:
            raise Unsupported(op.type)
        ruled = _RULED_OUTPUTS.get(op.type, range(len(op.outputs)))
        for k, t in enumerate(op.outputs):
            if t.dtype.is_floating:
                (reached if k in ruled else without_rule).add(t.ref())
        path.append(op)
    return path


def quadratic_form(path: list[tf.Operation], loss: tf.Tensor) -> Callable[[list, list], tf.Tensor]:
    """d²/dt² of the scalar ``loss`` at t = 0, as a function of (``sources``,
    their ``directions``) that moves each source by t times its direction,
    through ``path`` (``on_path``, in the graph being traced). What does not
    depend on the direction is built here, once: the adjoints (one backward
    pass) and each pointwise op's f′ and adjoint ⊙ f″. Call the result for
    each direction (in a loop over columns, say): a column then costs only
    the products with it. The sum is float64."""
    curved = [t for op in path if op.type not in _FLAT for t in op.outputs if t.dtype.is_floating]
    grads = tf.gradients(loss, curved, unconnected_gradients=tf.UnconnectedGradients.NONE) if curved else []
    adjoints = {t.ref(): None if g is None else tf.convert_to_tensor(g) for t, g in zip(curved, grads)}
    pointwise = {}
    for op in path:
        if op.type in _COEFFICIENTS:
            f1, f2 = _COEFFICIENTS[op.type](op)
            adjoint = None if f2 is None else adjoints[op.outputs[0].ref()]
            pointwise[op] = f1, None if adjoint is None else adjoint * f2

    def form(sources: list[tf.Tensor], directions: list[tf.Tensor]) -> tf.Tensor:
        firsts: dict = {t.ref(): v for t, v in zip(sources, directions)}
        terms = []

        def add(weight: Tensor, local: Tensor) -> None:
            if weight is not None and local is not None:
                terms.append(tf.cast(tf.reduce_sum(weight * local), tf.float64))

        for op in path:
            if op in pointwise:  # z = f(a): ż = f′ȧ, local term f″ȧ²
                (f1, weight), first = pointwise[op], firsts.get(op.inputs[0].ref())
                if first is not None:
                    firsts[op.outputs[0].ref()] = f1 * first
                    add(weight, first * first)
                continue
            for t, pair in zip(op.outputs, _RULES[op.type](op, [firsts.get(t.ref()) for t in op.inputs])):
                if pair is None or not t.dtype.is_floating:
                    continue
                first, local = pair
                if first is not None:
                    firsts[t.ref()] = first
                add(None if local is None else adjoints[t.ref()], local)  # a flat op has no local term
        return tf.add_n(terms) if terms else tf.constant(0.0, tf.float64)
    return form


# ----------------------------------------------------------------- helpers
def _total(*terms: Tensor) -> Tensor:
    present = [t for t in terms if t is not None]
    return functools.reduce(operator.add, present) if present else None


def _like(t: Tensor, z: tf.Tensor) -> Tensor:
    """``t`` broadcast to ``z``'s shape (an addend's derivative may be smaller)."""
    if t is None or (t.shape.is_fully_defined() and t.shape == z.shape):
        return t
    return tf.broadcast_to(t, tf.shape(z))


def _linear(apply: Callable[[tf.Operation, tf.Tensor], tf.Tensor]) -> Callable:
    """An op linear in its first input (the others are shapes, axes, indices)."""
    def rule(op, given):
        return [(None if given[0] is None else apply(op, given[0]), None)]
    return rule


def _bilinear(product: Callable[[tf.Operation, tf.Tensor, tf.Tensor], tf.Tensor]) -> Callable:
    """z = a ⊗ b (a product linear in each): ż = ȧ⊗b + a⊗ḃ, local term 2ȧ⊗ḃ."""
    def rule(op, given):
        a1, b1 = given[:2]
        a, b = op.inputs[0], op.inputs[1]
        times = lambda u, w: None if u is None or w is None else product(op, u, w)  # noqa: E731
        cross = times(a1, b1)  # one factor of each operand: the output's shape
        return [(_total(times(a1, b), times(a, b1)), None if cross is None else 2 * cross)]
    return rule


def _sum_rule(signs: tuple[float, ...]) -> Callable:
    def rule(op, given):
        terms = [None if t is None else (t if sign > 0 else -t) for t, sign in zip(given, signs)]
        return [(_like(_total(*terms), op.outputs[0]), None)]
    return rule


def _add_n(op, given):
    return _sum_rule((1.0,) * len(given))(op, given)


def _quotient(op, given):
    # z = a / b: ż = (ȧ − z ḃ) / b, local term −2 ż ḃ / b.
    a1, b1 = given
    b, z = op.inputs[1], op.outputs[0]
    first = _like(_total(a1, None if b1 is None else -z * b1), z)
    first = None if first is None else first / b
    return [(first, None if first is None or b1 is None else _like(-2 * first * b1 / b, z))]


def _power(op) -> tuple[tf.Tensor, tf.Tensor]:
    # z = a^b with the exponent fixed: f′ = b a^(b−1), f″ = b (b−1) a^(b−2) (zero where the factor is).
    a, b = op.inputs[0], op.inputs[1]
    f1 = tf.where(tf.equal(b, 0), tf.zeros_like(a), b * tf.pow(a, b - 1))
    return f1, tf.where(tf.equal(b * (b - 1), 0), tf.zeros_like(a), b * (b - 1) * tf.pow(a, b - 2))


def _squared_difference(op, given):
    # z = (a − b)²: with d = a − b, ż = 2 d ḋ, local term 2 ḋ².
    a1, b1 = given
    d1, z = _total(a1, None if b1 is None else -b1), op.outputs[0]
    if d1 is None:
        return [(None, None)]
    return [(_like(2 * (op.inputs[0] - op.inputs[1]) * d1, z), _like(2 * d1 * d1, z))]


def _chosen(mask: tf.Tensor, given: list, inputs: list[tf.Tensor], z: tf.Tensor) -> list[Pair]:
    """The derivative from the input ``mask`` chooses (the first where True):
    piecewise, so no curvature of its own."""
    ta, tb = given
    if ta is None and tb is None:
        return [(None, None)]
    ta, tb = (_like(tf.zeros_like(x) if t is None else t, z) for t, x in ((ta, inputs[0]), (tb, inputs[1])))
    return [(tf.where(_like(mask, z), ta, tb), None)]


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
        parts = given[:count(op)]
        if all(t is None for t in parts):
            return [(None, None)]
        return [(build(op, [tf.zeros_like(x) if t is None else t for t, x in zip(parts, op.inputs)]), None)]
    return rule


def _unstacked(op, given):
    if given[0] is None:
        return [None] * len(op.outputs)
    return [(t, None) for t in tf.unstack(given[0], num=op.get_attr("num"), axis=op.get_attr("axis"))]


def _softmax_cross_entropy(op, given):
    """ℓ = logsumexp(z) − ⟨labels, z⟩ per row, labels fixed: ℓ̇ = ⟨p − labels, ż⟩,
    local term ⟨p, ż²⟩ − ⟨p, ż⟩². The second output (the gradient) has no rule."""
    logits, labels, first = op.inputs[0], op.inputs[1], given[0]
    if first is None:
        return [None, None]
    p = tf.nn.softmax(logits)
    if op.type == "SparseSoftmaxCrossEntropyWithLogits":
        labels = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    row = lambda t: tf.reduce_sum(t, axis=-1)  # noqa: E731
    mean_first = row(p * first)
    return [(row((p - labels) * first), row(p * first * first) - mean_first * mean_first), None]


def _log_softmax_pair(p: tf.Tensor, first: Tensor) -> Pair:
    """y = log softmax(z), p = softmax(z): ẏ = ż − ⟨p, ż⟩, local term ⟨p, ż⟩² − ⟨p, ż²⟩."""
    if first is None:
        return None, None
    mean = lambda t: tf.reduce_sum(p * t, axis=-1, keepdims=True)  # noqa: E731
    mean_first = mean(first)
    return first - mean_first, mean_first * mean_first - mean(first * first)


def _log_softmax(op, given):
    return [_log_softmax_pair(tf.exp(op.outputs[0]), given[0])]


def _softmax(op, given):
    # s = exp(y), y = log softmax(z): ṡ = s ẏ, local term s (ẏ² + y's local term).
    s = op.outputs[0]
    y1, local = _log_softmax_pair(s, given[0])
    return [(None, None)] if y1 is None else [(s * y1, s * (y1 * y1 + local))]


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
    # Piecewise linear: the derivative taken where the maximum is (MaxPoolGradGrad selects it).
    if given[0] is None:
        return [(None, None)]
    return [(tf.raw_ops.MaxPoolGradGrad(orig_input=op.inputs[0], orig_output=op.outputs[0], grad=given[0],
                                        **_pool_attrs(op)), None)]


def _bias_add(op, given):
    a1, b1 = given
    if b1 is None:
        return [(a1, None)]
    z = op.outputs[0]
    return [(tf.nn.bias_add(tf.zeros_like(z) if a1 is None else a1, b1, data_format=op.get_attr("data_format").decode()),
             None)]


def _strided_slice(op, t):
    masks = {name: op.get_attr(name) for name in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                                                   "shrink_axis_mask")}
    return tf.raw_ops.StridedSlice(input=t, begin=op.inputs[1], end=op.inputs[2], strides=op.inputs[3], **masks)


def _relu(a, z):
    return tf.cast(a > 0, a.dtype), None


def _leaky(op) -> tuple[tf.Tensor, Tensor]:
    a, alpha = op.inputs[0], op.get_attr("alpha")
    return tf.where(a > 0, tf.ones_like(a), tf.fill(tf.shape(a), tf.cast(alpha, a.dtype))), None


def _sigmoid(a, z):
    f1 = z * (1 - z)
    return f1, f1 * (1 - 2 * z)


def _of_op(coefficients: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, Tensor]], op) -> tuple[tf.Tensor, Tensor]:
    return coefficients(op.inputs[0], op.outputs[0])


# z = f(a) elementwise: (f′, f″) from the input a and output z; None where f″ is zero.
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

_COEFFICIENTS: dict[str, Callable[[tf.Operation], tuple[tf.Tensor, Tensor]]] = {
    **{name: functools.partial(_of_op, f) for name, f in _POINTWISE.items()},
    "LeakyRelu": _leaky,
    "Pow": _power,
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

# Ops whose second derivative is linear in their inputs' (no local term): no adjoint needed.
_FLAT = frozenset({*_LINEAR, "Relu", "Abs", "LeakyRelu", "AddV2", "Add", "Sub", "AddN", "BiasAdd", "Maximum",
                   "Minimum", "Select", "SelectV2", "ConcatV2", "Pack", "Unpack", "MaxPool"})

_RULES: dict[str, Callable[[tf.Operation, list], list]] = {
    **{name: _linear(apply) for name, apply in _LINEAR.items()},
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
