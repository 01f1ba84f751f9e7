"""Data-parallel meta-training with ``torchrun``: the meta-batch of tasks split across processes.

``torchrun --nproc-per-node=N -m fewshot train ...`` starts N copies of the CLI. Each one calls
:func:`init_from_env`, which reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and joins the process group: NCCL with one GPU
per process (``cuda:LOCAL_RANK``) when the run is on GPUs, gloo on the CPU.
:func:`fewshot.training.train` then takes a :class:`World` and does, each optimiser step:

1. **Task assignment: one shared stream, dealt round-robin.** Every rank holds the same
   :class:`~fewshot.tasks.TaskSampler` (same dataset, same seed), so every rank walks the *same*
   stream of episodes. Of the ``meta_batch_size`` tasks of a step, rank ``r`` builds tasks
   ``r, r + W, r + 2W, ...`` and only draws the indices of the others (a few ``randperm`` calls,
   no images) to keep its generator in step. Why this design and not one seed per rank:

   - the ranks' episodes are distinct (different positions of one stream) and reproducible from
     ``--seed`` alone;
   - a W-process run sees exactly the tasks a one-process run sees, in the same steps, so the two
     give the same parameters up to float rounding (the tests check this for MAML, first-order
     MAML and ProtoNet), and the number of processes can change between ``--resume``\\ s;
   - the sampler state is the same on every rank, so rank 0's checkpoint holds the whole
     training state and resuming needs nothing from the other ranks.

2. **Meta-gradients: summed, with the global mean's weights.** The loss of a step is the mean
   over *all* ``meta_batch_size`` tasks. Each rank back-propagates ``loss_i / meta_batch_size``
   for its own tasks (the batched MAML path scales its local mean by
   ``n_local / meta_batch_size``), and :func:`all_reduce_step` *sums* the gradients. This is the
   global mean for any split; averaging per-rank means would only equal it when every rank has
   the same number of tasks. So a meta-batch that the world size does not divide is **handled**
   (exactly; some ranks then have one task more than others), and only a meta-batch smaller than
   the world size is refused, since a rank would have no task at all (:func:`check_meta_batch`).
   The same collective sums the step's loss and accuracy (so every rank logs the global figures),
   averages the floating-point buffers (BatchNorm running statistics, which each rank updates on
   its own tasks) so that the replicas stay identical (an average of per-rank moving averages: close
   to, not equal to, one process's sequence of updates; they never enter a training-mode forward,
   so the parameters are unaffected), and carries rank 0's clock, so that the
   ``--max-seconds`` learning-rate schedule and the decision to stop are the same on every rank.

3. **Randomness of the methods themselves** (MANN shuffles its sequences with the global torch
   RNG): :func:`seed_step` seeds it at every step from ``(seed, rank, step)``, so each rank's
   shuffles are distinct, reproducible, and the same after a resume with no per-rank state saved.

Rank 0 alone validates and writes checkpoints (``train`` drops the ``validate`` and
``on_checkpoint`` callbacks elsewhere); the other ranks wait for it at the next step's
collective, so no rank ever enters a collective the others skip. A non-finite loss on any rank is
reported by every rank after the collective, instead of one rank raising while the others wait.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .tasks import Task, TaskSampler

__all__ = ["World", "init_from_env", "shutdown", "launched_by_torchrun", "check_meta_batch", "local_task_indices",
           "sample_meta_batch", "step_seed", "seed_step", "broadcast_model", "all_reduce_step"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class World:
    """This process's place in a data-parallel run.

    ``seconds`` is rank 0's training time at the last :func:`all_reduce_step` (the one clock every
    rank agrees on).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str  # "nccl" or "gloo"
    device: torch.device
    seconds: float = 0.0
    # Integer buffers (BatchNorm's num_batches_tracked) as of the last collective, identical on every
    # rank then, so that each rank's increments since can be summed into the global count.
    synced_counters: list[Tensor] = field(default_factory=list, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group of more than one process (as torchrun sets it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or "1") > 1


def init_from_env(device: str = "auto", *, timeout_minutes: float = 30.0) -> World | None:
    """Join the process group that ``torchrun`` describes in the environment.

    Args:
        device: ``"auto"`` (one GPU per process when CUDA is available, else the CPU), ``"cpu"``
            (gloo) or ``"cuda"`` (NCCL on ``cuda:LOCAL_RANK``).
        timeout_minutes: how long a collective may wait for a slow rank (rank 0 validating or
            writing a checkpoint) before the run fails.

    Returns:
        ``None`` when the process was not started as one of several (``WORLD_SIZE`` unset or 1):
        the caller then trains exactly as a plain single process does.

    Raises:
        ValueError: a variable torchrun sets is missing or malformed, a GPU index was given
            (each process takes ``cuda:LOCAL_RANK``), or there are fewer GPUs than processes on
            this machine; the message says what to change.
    """
    if not launched_by_torchrun():
        return None
    missing = [name for name in _ENV if not os.environ.get(name)]
    if missing:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {', '.join(missing)} is not; start "
                         "several processes with torchrun (torchrun --nproc-per-node=N -m fewshot train ...)")
    try:
        rank, world_size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError as exc:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({exc}); start with torchrun") from exc
    if not torch.distributed.is_available():
        raise ValueError("this PyTorch build has no torch.distributed; install a standard PyTorch wheel")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {device} under torchrun: use auto, cuda or cpu; each process takes the GPU "
                         "cuda:LOCAL_RANK (choose the GPUs with CUDA_VISIBLE_DEVICES)")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        available = torch.cuda.device_count()
        if available == 0:
            raise ValueError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
        if local_rank >= available:
            raise ValueError(f"this machine runs process LOCAL_RANK={local_rank} but only {available} GPU(s) are "
                             f"visible; use --nproc-per-node={available} or fewer (one process per GPU)")
        where = torch.device("cuda", local_rank)
        torch.cuda.set_device(where)
        backend = "nccl"
    else:
        where, backend = torch.device("cpu"), "gloo"
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, init_method="env://", timeout=timeout,
                                             device_id=where if backend == "nccl" else None)
    return World(rank, world_size, local_rank, backend, where)


def shutdown(world: World | None) -> None:
    """Leave the process group (a no-op for ``None`` or when it is already gone).

    Every rank waits for the others first: rank 0 hosts the rendezvous store, and a rank still talking to it when
    rank 0 has already left died with ``terminate called without an active exception`` (SIGABRT) at exit, about one
    run in four of ``tests/test_distributed.py::test_torchrun_cli_resumes_a_run_and_matches_one_process``.
    """
    if world is not None and torch.distributed.is_initialized():
        try:  # bounded: a rank that failed mid-run never arrives, and the others must not wait 30 minutes for it
            if torch.distributed.get_backend() == "gloo":
                torch.distributed.monitored_barrier(timeout=datetime.timedelta(seconds=60))
            else:
                torch.distributed.barrier()
        except RuntimeError:  # a rank already gone (the run failed): leave anyway
            pass
        torch.distributed.destroy_process_group()


def check_meta_batch(meta_batch_size: int, world: World) -> None:
    """Raises ``ValueError`` when some rank would get no task (``meta_batch_size < world_size``)."""
    if meta_batch_size < world.world_size:
        raise ValueError(
            f"--meta-batch-size {meta_batch_size} is smaller than the number of processes ({world.world_size}): "
            f"each process trains on its share of a step's tasks, so use --meta-batch-size {world.world_size} "
            f"or more (a multiple of {world.world_size} keeps every process equally busy), or start fewer processes"
        )


def local_task_indices(meta_batch_size: int, world: World) -> list[int]:
    """Positions in a step's meta-batch that this rank trains on: ``rank, rank + W, ...``."""
    return list(range(world.rank, meta_batch_size, world.world_size))


def sample_meta_batch(sampler: TaskSampler, meta_batch_size: int, device: torch.device, world: World) -> list[Task]:
    """This rank's tasks of the next meta-batch of the shared stream; the others' are drawn as indices only."""
    mine = set(local_task_indices(meta_batch_size, world))
    tasks = []
    for position in range(meta_batch_size):
        if position in mine:
            tasks.append(sampler.sample_task().to(device))
        else:
            sampler.sample_indices()  # consumes the generator exactly as sample_task does, without the images
    return tasks


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for the global RNG of ``rank`` at ``step``; distinct for distinct triples (SHA-256)."""
    digest = hashlib.sha256(f"fewshot/{seed}/{rank}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_step(world: World, seed: int, step: int) -> None:
    """Seed the global torch RNG of this rank for ``step`` (see the module docstring, point 3)."""
    torch.manual_seed(step_seed(seed, world.rank, step))


def broadcast_model(model: nn.Module, world: World) -> None:
    """Copy rank 0's parameters and buffers to every rank (replicas start identical, as in DDP)."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)
    world.synced_counters = [b.detach().clone() for b in model.buffers() if not b.is_floating_point()]


def all_reduce_step(model: nn.Module, world: World, total_loss: float, total_accuracy: float,
                    seconds: float) -> tuple[float, float]:
    """One collective per step: sum gradients, loss and accuracy; average float buffers; share rank 0's clock.

    Integer buffers (BatchNorm's batch counters) get the sum of every rank's increments since the
    last collective, i.e. the count one process would have; :func:`broadcast_model` must have run.

    Gradients must have been accumulated as ``loss_i / meta_batch_size`` per local task, so the
    sum over ranks is the gradient of the global mean. A parameter without a gradient on every rank
    keeps ``grad = None`` (as in a single process, where Adam then skips it); one with a gradient on
    some rank gets the sum, the other ranks contributing zeros.

    Args:
        total_loss, total_accuracy: sums over this rank's tasks.
        seconds: this rank's training time; rank 0's value is stored in ``world.seconds``.

    Returns:
        The sums of ``total_loss`` and ``total_accuracy`` over all ranks.
    """
    params = list(model.parameters())
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    counters = [b for b in model.buffers() if not b.is_floating_point()]
    assert len(counters) == len(world.synced_counters), "broadcast_model must run before all_reduce_step"
    dtypes = {p.dtype for p in params} | {b.dtype for b in buffers}
    # One flat tensor, one collective; float64 only if the model mixes dtypes (summing two float32
    # values in float64 and rounding back gives the float32 sum anyway).
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float64
    has_grad = [p.grad is not None for p in params]
    stats = [total_loss, total_accuracy, seconds if world.is_main else 0.0, *map(float, has_grad)]
    pieces: list[Tensor] = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype)
                            for p in params]
    pieces += [b.reshape(-1).to(dtype) for b in buffers]
    pieces += [(b - before).reshape(-1).to(dtype) for b, before in zip(counters, world.synced_counters)]
    pieces.append(torch.tensor(stats, dtype=dtype, device=world.device))
    flat = torch.cat(pieces)
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    offset = 0
    n_stats = 3 + len(params)
    reduced_stats = flat[-n_stats:].tolist()
    for p, anywhere in zip(params, reduced_stats[3:]):
        chunk = flat[offset: offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        if anywhere > 0:
            p.grad = chunk.clone() if p.grad is None else p.grad.copy_(chunk)
    with torch.no_grad():
        for b in buffers:
            b.copy_((flat[offset: offset + b.numel()] / world.world_size).view_as(b))
            offset += b.numel()
        for b, before in zip(counters, world.synced_counters):
            b.copy_(before + flat[offset: offset + b.numel()].round().view_as(b).to(b.dtype))
            before.copy_(b)
            offset += b.numel()
    world.seconds = reduced_stats[2]
    return reduced_stats[0], reduced_stats[1]
