"""The curvature objective: a model's mean loss over a fixed data set, as a
pure function of its trainable weights, reduced over micro-batches and replicas.

Every curvature operator (Hessian, Gauss-Newton, Fisher, a landscape slice)
is a product built on one objective: the objective owns the twin, the data in
micro-batches, the reduction over ``tf.distribute`` replicas and the
conversion between flat float64 vectors and per-variable tensors; operators
own only what they compute on one micro-batch.

Example:

```python
objective = CurvatureObjective(model, "cross_entropy", x[:5000], y[:5000], micro_batch_size=1000)
loss, gradient = objective.loss_and_gradient()   # float, flat float64 vector
objective.describe()                             # the mode every number is computed in
```

Vectors are flat float64 numpy arrays in the order of
``model.trainable_variables`` (each variable flattened, C order). Nothing here
mutates the model: the loss is evaluated by the curvature twin's
``stateless_call`` on the model's current weight values (or on weights given
explicitly with ``at=``), so BatchNorm moving statistics, optimizer state and
random-number state are never touched.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from eoskeras.curvature.choices import BN_MODES, DTYPES, check_choice
from eoskeras.curvature.twin import build_twin
from eoskeras.losses import PerExampleLoss, accuracy_per_example, get_loss
from eoskeras.micro_batches import sum_over_micro_batches

# What a micro-batch function takes besides the data: nothing, one vector, or a block of vectors.
VECTOR_KINDS = (None, "vector", "block")


def dense(grads, like):
    """Gradients with ``None`` (unconnected) as zeros and sparse ones densified."""
    return [tf.zeros_like(t) if g is None else tf.convert_to_tensor(g) for g, t in zip(grads, like)]


class CurvatureObjective:
    """The mean loss of ``model`` on (x, y), its twin, micro-batches and replicas.

    Args:
        model: a built Keras model: Functional, Sequential or subclassed
            (a subclassed one is measured in its own dtype; see ``twin.py``).
        loss: ``"cross_entropy"``, ``"mse"`` (0.5·‖f(x) − onehot(y)‖²), a Keras
            loss, or a callable returning per-example losses.
        x, y: the fixed data set (numpy arrays or tensors).
        micro_batch_size: examples per micro-batch; results are weighted by
            example count, so they are the full data set's mean.
        bn_mode: ``"batch"`` (batch statistics per micro-batch: the loss that
            full-batch GD descends) or ``"inference"`` (moving statistics).
        dtype: ``"float32"`` or ``"float64"``; the computation runs in it.
        jit_compile: compile with XLA (off by default: on CPU it is slower and
            gives wrong HVPs through MaxPool).
        strategy: a ``tf.distribute`` strategy (default: the current one).
            Whole micro-batches are dealt to its replicas and the weighted
            results summed with an all-reduce, so every result equals the
            single-device one.

    The loss includes the model's own regularisation losses; dropout and
    noise layers are off (see ``twin.py``).
    """

    def __init__(self, model: keras.Model, loss: str | keras.losses.Loss | PerExampleLoss, x: Any, y: Any, *,
                 micro_batch_size: int = 1000, bn_mode: str = "batch", dtype: str = "float32",
                 jit_compile: bool = False, strategy: tf.distribute.Strategy | None = None) -> None:
        check_choice("bn_mode", bn_mode, BN_MODES)
        check_choice("dtype", dtype, DTYPES)
        n = len(x)
        if n == 0 or len(y) != n:
            raise ValueError(f"x and y must hold the same, non-zero number of examples (got {n} and {len(y)})")
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size: got {micro_batch_size}; allowed: an integer >= 1")
        self.model = model
        self.bn_mode, self.dtype, self.jit_compile = bn_mode, dtype, jit_compile
        self.micro_batch_size, self.num_examples = micro_batch_size, n
        self.strategy = strategy or tf.distribute.get_strategy()
        self.twin = build_twin(model, dtype)
        self._loss_fn = get_loss(loss)
        self._shards = self._deal(x, y)
        self._total = tf.constant(n, dtype)
        variables = model.trainable_variables
        self._shapes = [tuple(v.shape) for v in variables]
        self._sizes = [int(np.prod(s)) for s in self._shapes]
        self.dim = int(sum(self._sizes))
        # Inverse of the twin's order: where each original variable sits in the twin.
        self._to_original = np.argsort(self.twin.trainable_order).tolist()
        self._loss_and_gradient = self.reduction(self._chunk_loss_and_gradient, lambda _: (
            tf.constant(0.0, self.dtype), tf.zeros([self.dim], self.dtype)))
        self._loss_and_accuracy = self.reduction(self._chunk_loss_and_accuracy, lambda _: tf.zeros([2], self.dtype))

    # ----------------------------------------------------------------- public
    def describe(self) -> dict[str, Any]:
        """The mode the objective's numbers are computed in, for records."""
        return {
            "bn_mode": self.bn_mode,
            "dtype": self.dtype,
            "num_examples": self.num_examples,
            "micro_batch_size": self.micro_batch_size,
            "num_params": self.dim,
            "jit_compile": self.jit_compile,
            "replicas": self.strategy.num_replicas_in_sync,
        }

    def weights(self) -> np.ndarray:
        """The model's current trainable weights as a flat float64 vector."""
        return np.concatenate([np.ravel(v.numpy()) for v in self.model.trainable_variables]).astype(np.float64)

    def loss_and_gradient(self, at: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Mean loss and its gradient (flat float64)."""
        loss, grad = self._loss_and_gradient(None, at)
        return float(loss), grad

    def loss(self, at: np.ndarray | None = None) -> float:
        """Mean loss over the data set."""
        return self.loss_and_gradient(at)[0]

    def loss_and_accuracy(self, at: np.ndarray | None = None) -> tuple[float, float]:
        """Mean loss and accuracy (argmax of the outputs against the labels)."""
        loss, accuracy = self._loss_and_accuracy(None, at)
        return float(loss), float(accuracy)

    # ------------------------------------------- what operators build upon
    @property
    def one_pass(self) -> bool:
        """The data is one micro-batch on one replica: one pass covers it."""
        return len(self._shards) == 1 and self.num_examples <= self.micro_batch_size

    @property
    def data(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The data set (x, y) as tensors (the first replica's shard under a strategy)."""
        return self._shards[0]

    def reduction(self, per_chunk: Callable, zeros: Callable, vector: str | None = None) -> Callable:
        """``per_chunk(trainable, non_trainable, v_parts, x, y)`` summed over the
        micro-batches, weighted by example count, as ``run(v, at)`` → float64 numpy.

        ``per_chunk`` sees the twin-ordered weights, the vector's per-variable
        parts (``vector="vector"``), a block's (``"block"``: each part has a
        leading column axis) or none, and one micro-batch; it returns tensors
        shaped like ``zeros(v_parts)``. One input signature, with the data's
        exact shape (so one micro-batch needs no loop) and the column axis
        unknown, serves every call and block width: nothing retraces.
        """
        if vector not in VECTOR_KINDS:
            raise ValueError(f"vector: got {vector!r}; allowed: {VECTOR_KINDS}")

        # XLA compiles one micro-batch, never the loop: it clamps a dynamic slice into
        # bounds, which would turn a short last micro-batch into a full one.
        chunk = tf.function(per_chunk, jit_compile=True, autograph=False) if self.jit_compile else per_chunk

        def over_data(trainable, non_trainable, v, x, y):
            # Cast and split in the graph: per-variable eager slicing would cost a small
            # model's HVP ~20 %, and NumPy casts a 40-column block ~40 ms slower.
            v_parts = [] if vector is None else self.split(tf.cast(v, self.dtype))
            return sum_over_micro_batches(lambda xc, yc: chunk(trainable, non_trainable, v_parts, xc, yc),
                                          x, y, self.micro_batch_size, self._total, zeros(v_parts))

        flat = {None: [], "vector": tf.TensorSpec([self.dim], tf.float64),
                "block": tf.TensorSpec([None, self.dim], tf.float64)}[vector]
        # No AutoGraph: this code's loops and branches are TensorFlow's own, and Keras 3 has no
        # Python control flow on tensors (a user's model that has it fails with AutoGraph too).
        # Converting the call tree cost the quickstart's first block graph 0.8 s of its 1.2 s.
        graph = tf.function(over_data, input_signature=self.signature(flat), autograph=False)
        replicated = tf.function(self._replicate(over_data), autograph=False) if len(self._shards) > 1 else None
        # The signature's one graph, traced on first use and called directly: binding a call costs more.
        concrete = functools.cache(graph.get_concrete_function)

        def run(v: np.ndarray | None, at: np.ndarray | None = None) -> Any:
            block = vector == "block"
            flat_v = [] if vector is None else tf.constant(self.checked_vectors(v, "vectors" if block else "v", block))
            trainable, non_trainable = self.point(at)
            if replicated is None:
                total = concrete()(trainable, non_trainable, flat_v, *self._shards[0])
            else:
                shards = self.strategy.experimental_distribute_values_from_function(
                    lambda context: self._shards[context.replica_id_in_sync_group])
                total = replicated((trainable, non_trainable, flat_v), shards)
            return tf.nest.map_structure(lambda t: t.numpy().astype(np.float64), total)

        run.traced = graph  # for tests that count traces
        return run

    def forward(self, trainable, non_trainable, x, y):
        """One micro-batch's outputs, per-example losses and regularisation
        loss (all in the objective's dtype), as functions of the twin-ordered
        ``trainable`` values: for tapes and accumulators around the call."""
        with self.twin.exact():
            outputs, _, reg_losses = self.twin.model.stateless_call(
                trainable, non_trainable, x, training=self.bn_mode == "batch", return_losses=True
            )
        regularisation = tf.add_n([tf.constant(0.0, self.dtype)] + [tf.cast(r, self.dtype) for r in reg_losses])
        return outputs, self.per_example_loss(y, outputs), regularisation

    def per_example_loss(self, y, outputs):
        """The per-example loss of ``outputs`` in the objective's dtype."""
        return tf.cast(self._loss_fn(y, outputs), self.dtype)

    def mean_loss(self, trainable, non_trainable, x, y):
        """One micro-batch's mean loss plus the regularisation."""
        _, losses, regularisation = self.forward(trainable, non_trainable, x, y)
        return tf.reduce_mean(losses) + regularisation

    def loss_and_gradient_parts(self, trainable, non_trainable, x, y):
        """One micro-batch's mean loss and its gradient (per-variable, twin
        order), recorded by any tape or accumulator around the call."""
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            loss = self.mean_loss(trainable, non_trainable, x, y)
        return loss, dense(tape.gradient(loss, trainable), trainable)

    def gradient(self, trainable, non_trainable, x, y):
        """One micro-batch's loss gradient, as ``loss_and_gradient_parts``."""
        return self.loss_and_gradient_parts(trainable, non_trainable, x, y)[1]

    def split(self, flat):
        """Flat vector(s) (dim, or columns × dim) -> per-variable parts in the
        twin's order; a block's parts get a leading column axis."""
        lead = [-1 if d is None else d for d in flat.shape[:-1]]
        pieces = tf.split(flat, self._sizes, axis=-1)
        parts = [tf.reshape(p, lead + list(s)) for p, s in zip(pieces, self._shapes)]
        return [parts[j] for j in self.twin.trainable_order]

    def flatten(self, parts):
        """Twin-ordered per-variable tensors -> one flat vector in the original order."""
        return tf.concat([tf.reshape(parts[i], [-1]) for i in self._to_original], axis=0)

    def point(self, at: np.ndarray | None = None):
        """Trainable and non-trainable values in the twin's order and dtype:
        the variables themselves where no cast is needed, read when passed to
        a graph, so use them at once."""
        if at is None:
            src = [v.value for v in self.model.trainable_variables]
        else:
            src = tf.split(tf.constant(self.checked_vectors(at, "at")), self._sizes)
            src = [tf.reshape(p, s) for p, s in zip(src, self._shapes)]
        non_trainable = self.model.non_trainable_variables
        # An eager cast per variable costs a small model's HVP several per cent: skip no-ops.
        cast = lambda t: t if t.dtype == self.dtype else tf.cast(t, self.dtype)  # noqa: E731
        return ([cast(src[j]) for j in self.twin.trainable_order],
                [cast(non_trainable[j].value) for j in self.twin.non_trainable_order])

    def checked_vectors(self, v: np.ndarray, name: str, block: bool = False) -> np.ndarray:
        """``v`` as float64, checked to be a flat vector, or with ``block`` a
        (dim, m) block of columns, returned as rows (m, dim)."""
        v = np.asarray(v, dtype=np.float64)
        if block and (v.ndim != 2 or v.shape[0] != self.dim):
            raise ValueError(f"{name}: expected shape ({self.dim}, m), got {v.shape}")
        if not block and v.shape != (self.dim,):
            raise ValueError(f"{name}: expected a flat vector of {self.dim} entries (the trainable weights), "
                             f"got shape {v.shape}")
        return v.T if block else v

    # --------------------------------------------------------------- plumbing
    def _deal(self, x, y) -> list[tuple[tf.Tensor, tf.Tensor]]:
        """The data, or with several replicas one shard of whole micro-batches
        each (dealt in turn; a replica may get none)."""
        def tensor(a):
            t = tf.convert_to_tensor(a)
            return tf.cast(t, self.dtype) if t.dtype.is_floating else t

        replicas = self.strategy.num_replicas_in_sync
        if replicas == 1:
            return [(tensor(x), tensor(y))]
        size = self.micro_batch_size
        starts = range(0, len(x), size)
        return [(tensor(np.concatenate([np.asarray(x[s:s + size]) for s in starts[r::replicas]] or [x[:0]])),
                 tensor(np.concatenate([np.asarray(y[s:s + size]) for s in starts[r::replicas]] or [y[:0]])))
                for r in range(replicas)]

    def _replicate(self, over_data: Callable) -> Callable:
        def run(args, shard):
            # The plain Python function: per-replica values do not bind to an input signature.
            per_replica = self.strategy.run(over_data, args=(*args, *shard))
            return tf.nest.map_structure(
                lambda t: self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), per_replica)
        return run

    def signature(self, *middle: Any, any_batch: bool = False) -> list[Any]:
        """The input signature of a graph taking ``point()``'s two lists,
        then ``middle``, then the data's (x, y) in their exact shapes (with
        ``any_batch``, any number of examples: a subset of them too)."""
        trainable, non_trainable = self.model.trainable_variables, self.model.non_trainable_variables
        x, y = self._shards[0]
        data = [tf.TensorSpec([None, *t.shape[1:]] if any_batch else t.shape, t.dtype) for t in (x, y)]
        return [[tf.TensorSpec(trainable[j].shape, self.dtype) for j in self.twin.trainable_order],
                [tf.TensorSpec(non_trainable[j].shape, self.dtype) for j in self.twin.non_trainable_order],
                *middle, *data]

    def _chunk_loss_and_gradient(self, trainable, non_trainable, v_parts, x, y):
        loss, grads = self.loss_and_gradient_parts(trainable, non_trainable, x, y)
        return loss, self.flatten(grads)

    def _chunk_loss_and_accuracy(self, trainable, non_trainable, v_parts, x, y):
        outputs, losses, regularisation = self.forward(trainable, non_trainable, x, y)
        accuracy = tf.reduce_mean(tf.cast(accuracy_per_example(y, outputs), self.dtype))
        return tf.stack([tf.reduce_mean(losses) + regularisation, accuracy])
