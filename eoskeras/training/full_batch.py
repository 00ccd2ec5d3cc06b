"""A Keras model whose every training step is one exact full-batch GD update.

Example:

```python
net = eoskeras.build_model("fc-tanh", (28, 28, 1), 10)
model = FullBatchModel(net, loss="mse", physical_batch_size=1000)
model.compile(optimizer=keras.optimizers.SGD(0.05))
history = model.fit_full_batch(x_train, y_train, steps=50,
                               validation_data=(x_test, y_test), eval_every=10,
                               callbacks=[SharpnessMonitor(x_train, y_train, every=10)])
```

``fit_full_batch`` is ordinary ``model.fit`` with ``batch_size=len(x)``: each
epoch is one step, so History, CSVLogger, TensorBoard and every other Keras
callback see every step. Inside ``train_step`` the batch is split into
micro-batches of ``physical_batch_size`` whose gradients are accumulated,
weighted by example count, so memory is bounded by the micro-batch while the
update is the exact full-batch one. Calling ``fit`` with a smaller
``batch_size`` gives mini-batch SGD through the same machinery.

BatchNorm under micro-batching uses per-micro-batch statistics ("ghost
batches"), and its moving statistics are updated once per micro-batch.
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from eoskeras.losses import accuracy_per_example, get_loss
from eoskeras.micro_batches import sum_over_micro_batches


class GhostBatchError(ValueError):
    """Under sharding, BatchNorm's ghost batches would differ from one device's."""


def _has_batch_norm(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization) or any(
        _has_batch_norm(sub) for sub in getattr(layer, "layers", ()))


def check_ghost_batches(network: keras.Model, batch: int, replicas: int, physical_batch_size: int) -> None:
    """Raise ``GhostBatchError`` when ``replicas`` shards of a ``batch`` would
    form other BatchNorm ghost batches than one device does.

    One device cuts the batch into micro-batches of ``physical_batch_size``
    (the curvature oracle deals whole micro-batches to replicas, so it agrees);
    each replica cuts its own shard. The two partitions are the same only when
    every shard is a whole number of micro-batches.
    """
    if replicas <= 1 or not _has_batch_norm(network):
        return
    shard, left = divmod(batch, replicas)
    if left == 0 and shard % physical_batch_size == 0:
        return
    if left:
        remedy = f"a batch that is a multiple of {replicas}"
    else:
        fits = next(d for d in range(min(physical_batch_size, shard), 0, -1) if shard % d == 0)
        remedy = f"a physical_batch_size dividing {shard:,}, such as {fits:,}"
    raise GhostBatchError(
        f"training.physical_batch_size: {physical_batch_size:,} does not split the {batch:,}-example batch sharded "
        f"over {replicas} replicas ({batch / replicas:,.6g} each) into whole micro-batches, so BatchNorm's ghost "
        f"batches would differ from one device's and from the Hessian's; allowed: {remedy}")


@keras.saving.register_keras_serializable(package="eoskeras")
class FullBatchModel(keras.Model):
    """Wraps ``network`` (a Keras model producing logits/outputs) for exact
    full-batch gradient descent with gradient accumulation.

    Args:
        network: the Keras model to train (Functional or Sequential, so that
            the curvature engine can measure it).
        loss: ``"cross_entropy"``, ``"mse"`` or a per-example loss callable.
        physical_batch_size: micro-batch size for gradient accumulation.
    """

    def __init__(self, network: keras.Model, loss: Any = "cross_entropy", physical_batch_size: int = 1000,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if physical_batch_size < 1:
            raise ValueError(f"physical_batch_size: got {physical_batch_size}; allowed: an integer >= 1")
        self.network = network
        self.loss_name = loss
        self.physical_batch_size = int(physical_batch_size)
        self._per_example_loss = get_loss(loss)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def _chunk_loss(self, x, y, training):
        outputs = self.network(x, training=training)
        loss = tf.reduce_mean(tf.cast(self._per_example_loss(y, outputs), tf.float32))
        if self.network.losses:
            loss += tf.cast(tf.add_n(self.network.losses), tf.float32)
        return loss, tf.reduce_mean(accuracy_per_example(y, outputs))

    def accumulate(self, x, y, *, training: bool = True, gradients: bool = True):
        """Mean loss, accuracy (and gradients) over a batch, by micro-batches.

        Each micro-batch's contribution is weighted by its example count, so
        the results equal the one-shot full-batch values.
        """
        variables = self.trainable_variables
        n = tf.shape(x)[0]
        size = self.physical_batch_size
        # Under tf.distribute each replica holds a shard of the batch: weights
        # use the global example count, so the optimizer's all-reduce SUM of
        # the replicas' gradients is the exact full-batch gradient.
        replica = tf.distribute.get_replica_context()
        total = tf.cast(n, tf.float32)
        if replica is not None and replica.num_replicas_in_sync > 1:
            total = replica.all_reduce(tf.distribute.ReduceOp.SUM, total)
            if training and x.shape[0] is not None:  # checked while tracing
                replicas = replica.num_replicas_in_sync
                check_ghost_batches(self.network, x.shape[0] * replicas, replicas, size)

        def chunk(xc, yc):
            with tf.GradientTape() as tape:
                loss, acc = self._chunk_loss(xc, yc, training)
            return loss, acc, [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)] if gradients else []

        zeros = (tf.constant(0.0), tf.constant(0.0), [tf.zeros(v.shape, v.dtype) for v in variables] if gradients else [])
        loss_sum, acc_sum, grad_sums = sum_over_micro_batches(chunk, x, y, size, total, zeros)
        if replica is not None and replica.num_replicas_in_sync > 1:
            loss_sum, acc_sum = replica.all_reduce(tf.distribute.ReduceOp.SUM, [loss_sum, acc_sum])
        return loss_sum, acc_sum, grad_sums

    def _results(self):
        # Keras averages a step's logs over MultiWorkerMirroredStrategy
        # workers along axis 0, which a scalar lacks. The values are already
        # all-reduced, equal on every replica, so a length-1 vector averages
        # to the same scalar.
        vector = isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)
        return {m.name: tf.reshape(m.result(), [1]) if vector else m.result() for m in self.metrics}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds the model from a distributed batch reduced to one value;
        # MultiWorkerMirroredStrategy cannot reduce an (x, y) tuple. The batch
        # only gives shapes, so a replica's local shard does as well.
        strategy = self.distribute_strategy
        if iterator is not None and data_batch is None and isinstance(
                strategy, tf.distribute.MultiWorkerMirroredStrategy):
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(it))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        x, y = data[0], data[1]
        loss, acc, grads = self.accumulate(x, y)
        self.optimizer.apply(grads, self.trainable_variables)
        # Loss and accuracy are those at the weights *before* this update.
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(acc)
        return self._results()

    def test_step(self, data):
        x, y = data[0], data[1]
        loss, acc, _ = self.accumulate(x, y, training=False, gradients=False)
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(acc)
        return self._results()

    def fit_full_batch(self, x, y, steps: int, *, initial_step: int = 0, validation_data=None,
                       eval_every: int = 1, callbacks=None, verbose: int = 0) -> keras.callbacks.History:
        """``steps`` full-batch GD steps through ordinary ``fit`` (one epoch per step).

        The full batch is one element of a repeated ``tf.data`` pipeline, so
        Keras keeps a single iterator instead of re-slicing the arrays every
        epoch (which costs more than the step itself on small problems).
        """
        train = tf.data.Dataset.from_tensors((x, y)).repeat()
        validation = None
        if validation_data is not None:
            validation = tf.data.Dataset.from_tensors(tuple(validation_data[:2]))
        return self.fit(
            train, epochs=initial_step + steps, initial_epoch=initial_step, steps_per_epoch=1,
            validation_data=validation, validation_freq=eval_every, callbacks=callbacks, verbose=verbose,
            shuffle=False,
        )

    def get_config(self) -> dict:
        return {
            "network": keras.saving.serialize_keras_object(self.network),
            "loss": self.loss_name if isinstance(self.loss_name, str) else None,
            "physical_batch_size": self.physical_batch_size,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict) -> "FullBatchModel":
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)
