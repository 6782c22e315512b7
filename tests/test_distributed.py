"""Data-parallel training on a real local Ray cluster (Ray Train, 2 workers): the same
steps as one process, so the same weights."""

from __future__ import annotations

import sys
from functools import partial

import pytest
import torch

from newsfeed.models.distributed import RayTrainConfig, run_on_ray
from newsfeed.models.training import TrainConfig, fit

pytestmark = pytest.mark.slow


def squared_error(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()


def regression(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return {"x": x, "y": x @ torch.arange(1.0, 9.0) + 0.1 * torch.randn(n, generator=g)}


def train(config: TrainConfig):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    history = fit(model, squared_error, regression(1024, 1), regression(256, 2), config, show_progress=False)
    return model.state_dict(), history


def test_two_ray_workers_train_the_same_weights_as_one_process(tmp_path):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    config = TrainConfig(epochs=4, batch_size=64, learning_rate=0.3, patience=10, threads=1)
    alone_state, alone = train(config)
    ray_state, on_ray = run_on_ray(partial(train, config), RayTrainConfig(workers=2), tmp_path / "ray", "test")

    assert (alone.workers, on_ray.workers) == (1, 2)
    assert on_ray.samples == alone.samples == 4 * 1024
    assert alone.val_loss[-1] < 0.1 * alone.val_loss[0]  # it learnt something worth comparing
    for name, tensor in alone_state.items():
        torch.testing.assert_close(ray_state[name], tensor, rtol=1e-4, atol=1e-5)
    assert on_ray.train_loss == pytest.approx(alone.train_loss, rel=1e-4)


def test_trainer_names_are_checked():
    assert RayTrainConfig.for_trainer("local") is None
    assert RayTrainConfig.for_trainer("ray", 3).workers == 3
    with pytest.raises(ValueError, match="trainer must be one of local, ray, not .spark."):
        RayTrainConfig.for_trainer("spark")
