"""Training on a Ray cluster: Ray Train's TorchTrainer runs a training job on N workers
joined by a torch process group (gloo); ``training.fit`` sees the group, trains each worker
on its shard and averages gradients. The job's result comes back from worker 0.

With no address a local Ray instance is started for the run (laptop, CI); with one
(``ray://head:10001`` or ``auto`` inside a cluster) the workers run there, and
``storage`` must be a path every node can reach (shared volume or object store URI).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field

from newsfeed.ray_session import ray_session

T = TypeVar("T")
RESULT_FILE = "result.pt"
TRAINERS = ("local", "ray")
"""Where a pipeline's training steps train: in the step's process, or on Ray Train."""


class RayTrainConfig(BaseModel):
    workers: int = Field(2, ge=1, description="training processes (Ray Train workers)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each worker asks for; torch uses that many threads")
    address: str | None = Field(None, description="Ray cluster to join [default: start a local one for the run]")

    @classmethod
    def for_trainer(cls, trainer: str, workers: int = 2, address: str | None = None) -> "RayTrainConfig | None":
        """The Ray settings for ``trainer='ray'``; None (train in this process) for 'local'."""
        if trainer not in TRAINERS:
            raise ValueError(f"trainer must be one of {', '.join(TRAINERS)}, not {trainer!r}")
        return cls(workers=workers, address=address or None) if trainer == "ray" else None


def _worker_loop(config: dict) -> None:
    import ray
    import ray.train
    import torch

    job = ray.get(config["job"])
    result = job()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            torch.save(result, Path(tmp) / RESULT_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"done": 1}, checkpoint=checkpoint)  # every worker reports; worker 0 with the result


def run_on_ray(job: Callable[[], T], config: RayTrainConfig, storage: Path | str, name: str = "newsfeed") -> T:
    """Run ``job()`` on ``config.workers`` Ray Train workers; return worker 0's result."""
    import ray
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    with ray_session(config.address, math.ceil(config.workers * config.cpus_per_worker)):
        trainer = TorchTrainer(
            _worker_loop, train_loop_config={"job": ray.put(job)},
            scaling_config=ScalingConfig(num_workers=config.workers,
                                         resources_per_worker={"CPU": config.cpus_per_worker}),
            run_config=RunConfig(storage_path=str(storage), name=name),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"Ray training {name!r} ended without a result: {result.error}")
        with result.checkpoint.as_directory() as folder:
            return torch.load(Path(folder) / RESULT_FILE, weights_only=False)
