"""The tf.distribute strategy a recipe names.

Every strategy goes through the same code: the runner builds the model and
optimizer in its scope, Keras shards each full batch across replicas, and
the curvature oracles deal micro-batches to the replicas and all-reduce.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from eoskeras.runs.choices import STRATEGIES

# What a multi-worker collective raises when a peer stops (its heartbeats end, its socket closes).
LOST_PEER = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
             tf.errors.DeadlineExceededError)


class StrategyError(RuntimeError):
    """The requested strategy cannot be set up on this machine."""


def is_chief(name: str) -> bool:
    """Whether this process writes the run directory: always, except on the
    non-chief workers of a ``multi_worker`` run. The chief is the ``chief``
    task of ``TF_CONFIG``, or worker 0 when the cluster names no chief (the
    Keras multi-worker convention; ``strategy.extended.should_checkpoint``
    says the same once the strategy exists, but this is known before)."""
    if name != "multi_worker":
        return True
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task, cluster = config.get("task", {}), config.get("cluster", {})
        kind, index = task.get("type"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as err:
        raise StrategyError(f"strategy 'multi_worker': TF_CONFIG is not a JSON object with cluster and task ({err})"
                            ) from err
    if kind is None:  # no cluster: one worker on its own
        return True
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


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
