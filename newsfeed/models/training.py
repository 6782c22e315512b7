"""The training loop both models share: seeded, threaded for the machine, early-stopped on
validation loss, with a progress display."""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from newsfeed.models.settings import TrainConfig  # noqa: F401 - the loop's settings, imported from here too

Batch = dict[str, torch.Tensor]


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)  # when fit was given one
    best_epoch: int = 0
    seconds: float = 0.0
    samples: int = 0
    workers: int = 1  # data-parallel processes that trained it (see newsfeed.models.distributed)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_cores(threads: int | None = None) -> int:
    """Intra-op threads = the cores this process may use (affinity aware, unlike
    ``os.cpu_count()``; ``OMP_NUM_THREADS`` where set, as Ray sets it to a worker's CPUs):
    more threads than cores makes every step slower."""
    n = threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def recency_weights(timestamps, half_life_days: float) -> torch.Tensor:
    """Per-row loss weights halving every ``half_life_days`` back from the newest row, scaled
    to mean 1 (the loss keeps its size)."""
    import pandas as pd

    ts = pd.to_datetime(timestamps, utc=True)
    age_days = ((ts.max() - ts).dt.total_seconds() / 86_400).to_numpy(np.float64)
    weights = 0.5 ** (age_days / half_life_days)
    return torch.from_numpy((weights / weights.mean()).astype(np.float32))


def weighted_mean(values: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean over rows (dim 0), by the batch's ``weight`` column when it has one."""
    weight = batch.get("weight")
    if weight is None:
        return values.mean(dim=0)
    weight = weight.reshape(-1, *([1] * (values.dim() - 1)))
    return (values * weight).sum(dim=0) / weight.sum()


def size(batch: Batch) -> int:
    return len(next(iter(batch.values())))


def take(batch: Batch, index: torch.Tensor | slice) -> Batch:
    return {k: v[index] for k, v in batch.items()}


def process_group() -> tuple[int, int]:
    """(rank, world size) of the torch process group this process is in; (0, 1) alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_gradients(model: torch.nn.Module, world: int) -> None:
    """Data parallelism by hand (one all-reduce of every gradient, flattened): the models call
    their towers and heads directly, so DDP's forward hooks would not see them."""
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:  # unused this step here, maybe not on another worker
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


def _sync_parameters(model: torch.nn.Module) -> None:
    import torch.distributed as dist

    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def fit(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor], train: Batch,
        val: Batch, config: TrainConfig, description: str = "training", show_progress: bool = True,
        val_metric: Callable[[torch.nn.Module], float] | None = None, keep_best: bool = True,
        val_label: str = "val") -> History:
    """Minibatch AdamW over ``train``; keeps the weights of the best epoch on validation and
    stops after ``patience`` epochs without improvement. Best = lowest validation loss, or
    highest ``val_metric(model)`` when given (for a model whose training loss is only a proxy
    of what it is for, as a sampled softmax is for retrieval). ``keep_best=False`` trains all
    ``epochs`` and keeps the last weights (a refit, whose validation rows are in ``train``);
    ``val_label`` names the second loss in the progress lines.

    In a torch process group (Ray Train's workers) each of the W processes trains on its
    1/W of every epoch's shuffled rows with batches of ``batch_size / W``, and gradients are
    averaged: together, the rows of one process's ``batch_size`` steps (though an in-batch
    softmax then sees only its process's rows as negatives). Every process judges the whole
    validation set, so all stop at the same epoch with the same weights."""
    seed_everything(config.seed)
    use_cores(config.threads)
    rank, world = process_group()
    if world > 1:
        _sync_parameters(model)
    show_progress = show_progress and rank == 0
    generator = torch.Generator().manual_seed(config.seed)  # the same permutation in every process
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    n = size(train)
    shard = n // world  # equal shards: every process takes the same number of steps
    batch_size = max(1, config.batch_size // world)
    steps = (shard + batch_size - 1) // batch_size
    history = History(workers=world)
    best, best_state, waited = float("inf"), copy.deepcopy(model.state_dict()), 0
    # A live bar within each epoch, then one summary line per epoch (fits any terminal width).
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        for epoch in range(config.epochs):
            task = progress.add_task(f"{description} epoch {epoch + 1}", total=steps)
            model.train()
            order = torch.randperm(n, generator=generator)[rank:shard * world:world]
            total, t0 = 0.0, time.perf_counter()
            for step in range(steps):
                batch = take(train, order[step * batch_size:(step + 1) * batch_size])
                loss = loss_fn(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:
                    _average_gradients(model, world)
                optimizer.step()
                total += float(loss.detach()) * size(batch)
                progress.update(task, advance=1)
            history.seconds += time.perf_counter() - t0
            history.samples += shard * world
            history.train_loss.append(_global_mean(total, shard, world))
            history.val_loss.append(evaluate_loss(model, loss_fn, val, config.batch_size * 4))
            status = (f"{description} epoch {epoch + 1}: loss {history.train_loss[-1]:.4f}, "
                      f"{val_label} {history.val_loss[-1]:.4f}")
            if val_metric is not None:
                history.val_metric.append(val_metric(model))
                status += f", val metric {history.val_metric[-1]:.4f}"
            progress.remove_task(task)
            if show_progress:
                progress.console.print(f"{status} ({time.perf_counter() - t0:.1f} s)", highlight=False)
            # Lower is better: the loss, or the metric negated.
            current = -history.val_metric[-1] if val_metric is not None else history.val_loss[-1]
            if current < best - 1e-5:
                best, best_state, waited, history.best_epoch = current, copy.deepcopy(model.state_dict()), 0, epoch
            elif keep_best:
                waited += 1
                if waited > config.patience:
                    break
    if keep_best:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _global_mean(total: float, count: int, world: int) -> float:
    if world == 1:
        return total / max(count, 1)
    import torch.distributed as dist

    sums = torch.tensor([total, float(count)], dtype=torch.float64)
    dist.all_reduce(sums)
    return float(sums[0] / sums[1].clamp(min=1))


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, loss_fn, data: Batch, batch_size: int) -> float:
    model.eval()
    n = size(data)
    total = 0.0
    for start in range(0, n, batch_size):
        batch = take(data, slice(start, start + batch_size))
        total += float(loss_fn(model, batch)) * size(batch)
    return total / max(n, 1)
