"""The Hessian oracle: the mean loss of a model over a fixed data set, as a
pure function of the weights, with its gradient and Hessian-vector products.

Example:

```python
oracle = HessianOracle(model, "cross_entropy", x_train[:5000], y_train[:5000],
                       micro_batch_size=1000, bn_mode="batch", dtype="float32")
hv = oracle.hvp(np.random.randn(oracle.dim))   # float64 numpy vector
print(oracle.describe())                       # the mode every number was computed in
```

Vectors are flat float64 numpy arrays in the order of
``model.trainable_variables`` (each variable flattened, C order). Nothing here
mutates the model: the loss is evaluated by the curvature twin's
``stateless_call`` on the model's current weight values (or on weights given
explicitly with ``at=``), so BatchNorm moving statistics, optimizer state and
random-number state are never touched.
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from eoskeras.curvature.twin import build_twin
from eoskeras.losses import PerExampleLoss, get_loss

from eoskeras.curvature.choices import BN_MODES, DTYPES, HVP_MODES


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: got {value!r}; allowed: {', '.join(allowed)}")


def _dense(grads, like):
    # Unconnected variables get zeros; sparse (embedding) gradients get densified.
    return [tf.zeros_like(t) if g is None else tf.convert_to_tensor(g) for g, t in zip(grads, like)]


class HessianOracle:
    """Full-data-set loss, gradient and Hessian-vector products of a Keras model.

    Args:
        model: a built Keras model: Functional, Sequential or subclassed
            (a subclassed one is measured in its own dtype; see ``twin.py``).
        loss: ``"cross_entropy"``, ``"mse"`` (0.5·‖f(x) − onehot(y)‖²), a Keras
            loss, or a callable returning per-example losses.
        x, y: the fixed data set (numpy arrays or tensors), e.g. the first
            5,000 training examples.
        micro_batch_size: examples per chunk; chunk results are weighted by
            their example count, so the result is the full data set's mean.
        bn_mode: ``"batch"`` (batch statistics per micro-batch: the loss that
            full-batch GD descends) or ``"inference"`` (moving statistics).
        dtype: ``"float32"`` or ``"float64"``; the computation runs in it.
        hvp_mode: ``"reverse"`` (double backprop) or ``"forward"``
            (forward-over-reverse).
        jit_compile: compile with XLA (off by default: on CPU it is slower and
            gives wrong HVPs through MaxPool).
        block_size: the most HVPs ``hvp_block`` vectorises in one pass.
        strategy: a ``tf.distribute`` strategy (default: the current one).
            Micro-batches are dealt to its replicas and the weighted results
            summed with an all-reduce; with the same micro-batches every
            result equals the single-device one.

    The loss includes the model's own regularisation losses; dropout and noise
    layers are off (see ``twin.py``).
    """

    def __init__(
        self,
        model: keras.Model,
        loss: str | keras.losses.Loss | PerExampleLoss,
        x: Any,
        y: Any,
        *,
        micro_batch_size: int = 1000,
        bn_mode: str = "batch",
        dtype: str = "float32",
        hvp_mode: str = "reverse",
        jit_compile: bool = False,
        strategy: tf.distribute.Strategy | None = None,
        block_size: int = 8,
    ) -> None:
        _check_choice("bn_mode", bn_mode, BN_MODES)
        _check_choice("dtype", dtype, DTYPES)
        _check_choice("hvp_mode", hvp_mode, HVP_MODES)
        n = len(x)
        if n == 0 or len(y) != n:
            raise ValueError(f"x and y must hold the same, non-zero number of examples (got {n} and {len(y)})")
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size: got {micro_batch_size}; allowed: an integer >= 1")
        self.model = model
        self.bn_mode, self.dtype, self.hvp_mode = bn_mode, dtype, hvp_mode
        self.micro_batch_size, self.num_examples, self.jit_compile = micro_batch_size, n, jit_compile
        self.strategy = strategy or tf.distribute.get_strategy()
        self._twin = build_twin(model, dtype)
        self._loss_fn = get_loss(loss)
        self._chunks = [
            (self._to_tensor(x[i:i + micro_batch_size]), self._to_tensor(y[i:i + micro_batch_size]),
             tf.constant(min(micro_batch_size, n - i) / n, dtype))
            for i in range(0, n, micro_batch_size)
        ]
        variables = model.trainable_variables
        self._shapes = [tuple(v.shape) for v in variables]
        self._sizes = [int(np.prod(s)) for s in self._shapes]
        self.dim = int(sum(self._sizes))
        # Inverse of the twin's order: where each original variable sits in the twin.
        self._to_original = np.argsort(self._twin.trainable_order).tolist()
        self.num_hvps = 0
        # Input signatures with the example and block axes unknown: one trace per
        # function serves every micro-batch (the short last one too) and every
        # block width; without them each new shape retraces (a full trace of a
        # vectorised second derivative costs seconds).
        point = self._point_signature()
        chunk = self._chunk_signature()
        vector, block = self._vector_signature(None), self._vector_signature([None])
        hvp = self._hvp_reverse if hvp_mode == "reverse" else self._hvp_forward
        self._hvp_chunk = tf.function(hvp, jit_compile=jit_compile, input_signature=[*point, vector, *chunk])
        self._grad_chunk = tf.function(self._loss_and_grad, jit_compile=jit_compile, input_signature=[*point, *chunk])
        self._hvp_block_chunk = tf.function(self._hvp_block_reverse, jit_compile=jit_compile,
                                            input_signature=[*point, block, *chunk])
        self._replicated_fns: dict[str, Callable] = {}
        self.block_size = block_size
        self._pfor_ok = True

    # ----------------------------------------------------------------- public
    def describe(self) -> dict[str, Any]:
        """The mode the oracle's numbers are computed in, for records."""
        return {
            "bn_mode": self.bn_mode,
            "dtype": self.dtype,
            "hvp_mode": self.hvp_mode,
            "num_examples": self.num_examples,
            "micro_batch_size": self.micro_batch_size,
            "num_params": self.dim,
            "jit_compile": self.jit_compile,
            "replicas": self.strategy.num_replicas_in_sync,
        }

    def weights(self) -> np.ndarray:
        """The model's current trainable weights as a flat float64 vector."""
        return np.concatenate([np.ravel(v.numpy()) for v in self.model.trainable_variables]).astype(np.float64)

    def hvp(self, v: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """Hessian of the mean loss times ``v`` (flat float64 in, float64 out)."""
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (self.dim,):
            raise ValueError(f"v: expected a flat vector of {self.dim} entries (the trainable weights), got shape {v.shape}")
        self.num_hvps += 1
        v_parts = self._split_for_twin(tf.constant(v, self.dtype))
        return self._sum_over_chunks(self._hvp_chunk, *self._point(at), v_parts)

    # Solvers in this package call any operator through ``matvec`` (and
    # ``matmat`` for blocks, when the operator has it).
    matvec = hvp

    def hvp_block(self, vectors: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """H V for the columns of ``vectors`` (dim × m), float64.

        In reverse mode the forward pass and the gradient are computed once
        per micro-batch and the m second backward passes are vectorised
        (``pfor``), which costs far less than m separate HVPs; columns go
        ``block_size`` at a time to bound memory. Counts m HVPs.
        """
        block = np.asarray(vectors, dtype=np.float64)
        if block.ndim != 2 or block.shape[0] != self.dim:
            raise ValueError(f"vectors: expected shape ({self.dim}, m), got {block.shape}")
        if self.hvp_mode != "reverse" or not self._pfor_ok:
            return np.stack([self.hvp(c, at) for c in block.T], axis=1)
        results = []
        for start in range(0, block.shape[1], self.block_size):
            columns = block[:, start:start + self.block_size]
            v_parts = self._split_for_twin(tf.constant(columns.T, self.dtype), batch=columns.shape[1])
            try:
                results.append(self._sum_over_chunks(self._hvp_block_chunk, *self._point(at), v_parts).T)
            except (ValueError, NotImplementedError, tf.errors.OpError):
                # An op without a vectorising rule: fall back to one HVP per column.
                self._pfor_ok = False
                return self.hvp_block(vectors, at)
            self.num_hvps += columns.shape[1]
        return np.hstack(results)

    matmat = hvp_block

    def loss_and_gradient(self, at: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Mean loss and its gradient (flat float64)."""
        loss, grad = self._sum_over_chunks(self._grad_chunk, *self._point(at))
        return float(loss), grad

    def loss(self, at: np.ndarray | None = None) -> float:
        """Mean loss over the data set."""
        return self.loss_and_gradient(at)[0]

    # ------------------------------------- hooks for sibling operators (GGN, Fisher)
    def forward(self, trainable, non_trainable, x, y):
        """One micro-batch's outputs, per-example losses and regularisation
        loss (all in the oracle's dtype), as functions of the twin-ordered
        ``trainable`` values: for tapes and accumulators around the call."""
        with self._twin.exact():
            outputs, _, reg_losses = self._twin.model.stateless_call(
                trainable, non_trainable, x, training=self.bn_mode == "batch", return_losses=True
            )
        regularisation = tf.add_n([tf.constant(0.0, self.dtype)] + [tf.cast(r, self.dtype) for r in reg_losses])
        return outputs, self.per_example_loss(y, outputs), regularisation

    def per_example_loss(self, y, outputs):
        """The per-example loss of ``outputs`` in the oracle's dtype."""
        return tf.cast(self._loss_fn(y, outputs), self.dtype)

    def sum_over_micro_batches(self, chunk_fn: Callable, v: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """Σ over micro-batches of ``chunk_fn(trainable, non_trainable, v_parts, x, y, weight)``
        as float64: a ``tf.function`` returning ``weight`` × a flat vector
        (``flatten_parts`` of twin-ordered parts). ``v`` is flat, in the order
        of ``model.trainable_variables``; ``v_parts`` is it in the twin's."""
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (self.dim,):
            raise ValueError(f"v: expected a flat vector of {self.dim} entries (the trainable weights), got shape {v.shape}")
        v_parts = self._split_for_twin(tf.constant(v, self.dtype))
        return self._sum_over_chunks(chunk_fn, *self._point(at), v_parts)

    def flatten_parts(self, parts):
        """Twin-ordered per-variable tensors -> one flat vector in the original order."""
        return self._flatten_from_twin(parts)

    # --------------------------------------------------------------- plumbing
    def _to_tensor(self, a):
        t = tf.convert_to_tensor(a)
        return tf.cast(t, self.dtype) if t.dtype.is_floating else t

    def _point(self, at):
        """Trainable and non-trainable values in the twin's order and dtype."""
        if at is None:
            src = [v.value for v in self.model.trainable_variables]
        else:
            flat = np.asarray(at, dtype=np.float64)
            if flat.shape != (self.dim,):
                raise ValueError(f"at: expected a flat vector of {self.dim} weights, got shape {flat.shape}")
            src = tf.split(tf.constant(flat), self._sizes)
            src = [tf.reshape(p, s) for p, s in zip(src, self._shapes)]
        non_trainable = self.model.non_trainable_variables
        return (
            [tf.cast(src[j], self.dtype) for j in self._twin.trainable_order],
            [tf.cast(non_trainable[j].value, self.dtype) for j in self._twin.non_trainable_order],
        )

    def _point_signature(self) -> list[list[tf.TensorSpec]]:
        trainable, non_trainable = self.model.trainable_variables, self.model.non_trainable_variables
        return [[tf.TensorSpec(trainable[j].shape, self.dtype) for j in self._twin.trainable_order],
                [tf.TensorSpec(non_trainable[j].shape, self.dtype) for j in self._twin.non_trainable_order]]

    def _vector_signature(self, lead: list[None] | None) -> list[tf.TensorSpec]:
        """Per-variable parts of one vector, or of a block (``lead=[None]``)."""
        return [tf.TensorSpec((lead or []) + list(self._shapes[j]), self.dtype) for j in self._twin.trainable_order]

    def _chunk_signature(self) -> list[tf.TensorSpec]:
        x, y, weight = self._chunks[0]
        return [tf.TensorSpec([None, *x.shape[1:]], x.dtype), tf.TensorSpec([None, *y.shape[1:]], y.dtype),
                tf.TensorSpec(weight.shape, weight.dtype)]

    def _split_for_twin(self, flat, batch: int | None = None):
        """Flat vector(s) -> per-variable parts in the twin's order; with
        ``batch``, ``flat`` is (batch, dim) and parts get a leading axis."""
        lead = [] if batch is None else [batch]
        pieces = tf.split(flat, self._sizes, axis=-1)
        parts = [tf.reshape(p, lead + list(s)) for p, s in zip(pieces, self._shapes)]
        return [parts[j] for j in self._twin.trainable_order]

    def _flatten_from_twin(self, parts, batch: int | None = None):
        lead = [-1] if batch is None else [batch, -1]
        return tf.concat([tf.reshape(parts[i], lead) for i in self._to_original], axis=-1)

    def _sum_over_chunks(self, chunk_fn: Callable, *args) -> Any:
        """Sum of ``chunk_fn(*args, x, y, weight)`` over the micro-batches.

        Under a multi-replica strategy the micro-batches are dealt to the
        replicas a round at a time (a short last round is padded with
        zero-weight copies) and each round is all-reduced in one tf.function.
        """
        replicas = self.strategy.num_replicas_in_sync
        total = None
        for start in range(0, len(self._chunks), replicas):
            group = self._chunks[start:start + replicas]
            if replicas == 1:
                part = chunk_fn(*args, *group[0])
            else:
                xc, yc, _ = group[0]
                group = group + [(xc, yc, tf.zeros((), self.dtype))] * (replicas - len(group))
                values = self.strategy.experimental_distribute_values_from_function(
                    lambda context: group[context.replica_id_in_sync_group])
                part = self._replicated(chunk_fn)(args, values)
            total = part if total is None else tf.nest.map_structure(tf.add, total, part)
        return tf.nest.map_structure(lambda t: t.numpy().astype(np.float64), total)

    def _replicated(self, chunk_fn: Callable) -> Callable:
        key = chunk_fn.__name__
        if key not in self._replicated_fns:
            def run(args, chunk):
                # The plain Python function: per-replica values do not bind to an input signature.
                per_replica = self.strategy.run(chunk_fn.python_function, args=(*args, *chunk))
                return tf.nest.map_structure(
                    lambda t: self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), per_replica)

            self._replicated_fns[key] = tf.function(run)
        return self._replicated_fns[key]

    def _mean_loss(self, trainable, non_trainable, x, y):
        _, losses, regularisation = self.forward(trainable, non_trainable, x, y)
        return tf.reduce_mean(losses) + regularisation

    def _loss_and_grad(self, trainable, non_trainable, x, y, weight):
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            loss = self._mean_loss(trainable, non_trainable, x, y)
        grads = _dense(tape.gradient(loss, trainable), trainable)
        return weight * loss, weight * self._flatten_from_twin(grads)

    def _gradient(self, trainable, non_trainable, x, y):
        """The loss gradient, recorded by any tape (or accumulator) around the call."""
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            loss = self._mean_loss(trainable, non_trainable, x, y)
        return _dense(tape.gradient(loss, trainable), trainable)

    def _hvp_reverse(self, trainable, non_trainable, v_parts, x, y, weight):
        with tf.GradientTape() as outer:
            outer.watch(trainable)
            grads = self._gradient(trainable, non_trainable, x, y)
            grad_dot_v = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, v_parts)])
        hv = _dense(outer.gradient(grad_dot_v, trainable), trainable)
        return weight * self._flatten_from_twin(hv)

    def _hvp_block_reverse(self, trainable, non_trainable, v_parts, x, y, weight):
        batch = tf.shape(v_parts[0])[0]  # dynamic: the signature leaves the width unknown
        with tf.GradientTape() as outer:
            outer.watch(trainable)
            grads = self._gradient(trainable, non_trainable, x, y)
            # <g, v_i> for every column i at once: shape (batch,).
            grad_dot_v = tf.add_n([tf.reduce_sum(tf.reshape(g, [1, -1]) * tf.reshape(v, [batch, -1]), axis=1)
                                   for g, v in zip(grads, v_parts)])
        jacobian = outer.jacobian(grad_dot_v, trainable, experimental_use_pfor=True,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return weight * self._flatten_from_twin(jacobian, batch)

    def _hvp_forward(self, trainable, non_trainable, v_parts, x, y, weight):
        with tf.autodiff.ForwardAccumulator(trainable, v_parts) as acc:
            grads = self._gradient(trainable, non_trainable, x, y)
        hv = acc.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return weight * self._flatten_from_twin(hv)
