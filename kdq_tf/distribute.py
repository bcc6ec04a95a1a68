"""tf.distribute strategies: one device, mirrored (local GPUs or N logical CPUs), multi-worker.

No home-made parallelism: Keras `fit` under a strategy scope does the work.
Batch sizes are global; tf.data auto-sharding splits the data across workers.
"""

import json
import logging
import os
import tempfile
from dataclasses import dataclass

from kdq_tf.errors import KdqError

log = logging.getLogger(__name__)

STRATEGIES = ("default", "mirrored", "multiworker")


@dataclass(frozen=True)
class Cluster:
    """Who this process is: the chief writes artifacts, other workers write to a temp dir."""

    is_chief: bool
    task: str  # "worker:0" etc., "local" outside a cluster


def cluster_from_env() -> Cluster:
    """Reads TF_CONFIG; raises KdqError if it is not valid JSON with cluster and task."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return Cluster(True, "local")
    try:
        cfg = json.loads(raw)
        task = cfg["task"]
        kind, index = task["type"], int(task["index"])
        cluster = cfg["cluster"]
    except (ValueError, KeyError, TypeError) as e:
        raise KdqError(
            f"TF_CONFIG is not valid ({e}); see the README's 'Scaling out' section"
        ) from None
    # MultiWorkerMirroredStrategy: an explicit chief task, else worker 0, is the chief.
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return Cluster(is_chief, f"{kind}:{index}")


def make_strategy(name: str = "default", cpu_devices: int | None = None):
    """Builds the tf.distribute strategy.

    Args:
        name: "default" (one device), "mirrored" (all local GPUs, or `cpu_devices`
            logical CPUs), or "multiworker" (MultiWorkerMirroredStrategy from TF_CONFIG).
        cpu_devices: split the CPU into this many logical devices (testing mirrored
            on a machine without GPUs). Must be set before TensorFlow uses a device.

    Raises:
        KdqError: an unknown name, or logical devices requested after TF initialised.
    """
    from kdq_tf._keras import tf

    if name not in STRATEGIES:
        raise KdqError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if cpu_devices:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_devices)]
            )
        except RuntimeError:
            if len(tf.config.list_logical_devices("CPU")) != cpu_devices:
                raise KdqError(
                    "--cpu-devices must be set before TensorFlow starts using devices"
                ) from None
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        log.info("mirrored strategy on %s", ", ".join(devices))
        return tf.distribute.MirroredStrategy(devices=devices)
    if "TF_CONFIG" not in os.environ:
        raise KdqError("--strategy multiworker needs TF_CONFIG (cluster and task); see the README")
    cluster_from_env()  # validate early, with a clear message
    return tf.distribute.MultiWorkerMirroredStrategy()


def output_dir_for(out: str, cluster: Cluster) -> str:
    """The chief writes to `out`; every other worker to a private temp dir (TF multi-worker
    guide)."""
    if cluster.is_chief:
        return out
    return tempfile.mkdtemp(prefix=f"kdq_tf_{cluster.task.replace(':', '_')}_")
