"""The tf.distribute strategy a recipe names.

Every strategy goes through the same code: the runner builds the model and
optimizer in its scope, Keras shards each full batch across replicas, and
the curvature oracles deal micro-batches to the replicas and all-reduce.
"""
from __future__ import annotations

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


class StrategyError(RuntimeError):
    """The requested strategy cannot be set up on this machine."""


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, or the CPU),
    ``multi_worker`` (hosts described by ``TF_CONFIG``) or ``tpu``."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as err:
            raise StrategyError(f"strategy 'tpu': no TPU could be reached ({err}); use 'default' or 'mirrored'") from err
        return tf.distribute.TPUStrategy(resolver)
    raise StrategyError(f"strategy: got {name!r}; allowed: {', '.join(STRATEGIES)}")
