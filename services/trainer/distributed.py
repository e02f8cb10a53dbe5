"""Multi-GPU data-parallel training with PyTorch DDP: the process group, the few collectives
the training loop needs, and the two ways to start ranks.

One code path, two launchers:

* ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``, ``MASTER_PORT``): ``training.train`` calls ``from_environment()``,
  which joins the process group. ``python -m trainyard.services.trainer.distributed``
  is a standalone entry point for it (an image folder in, a checkpoint out).
* the trainer runtime, when it owns more than one GPU (``job_world_size``):
  ``spawn_train`` starts one process per GPU, each of which sets those variables
  for itself and calls ``training.train``; rank 0's progress and result come back
  to the runtime through a queue, a stop request goes to rank 0.

What a rank does differently from a single process (``training.train``): it trains
on its shard of every epoch's permutation (``shard_order``) with the network wrapped
in ``DistributedDataParallel``; evaluation is sharded and the probabilities
gathered, so every rank sees the same validation results; batch-norm statistics
are re-estimated on every rank and rank 0's broadcast. Every decision that depends
on a clock or on the caller — a stop request, the deadline, the epochs that fit —
is taken by rank 0 and broadcast (``decide``), so all ranks run the same number of
steps and none waits forever in a collective. Only rank 0 reports progress; only
rank 0's result is used to write artifacts.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import queue
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

if TYPE_CHECKING:  # training imports this module; the launchers below import it when called
    from trainyard.services.trainer.training import Progress, Sample, TrainConfig, TrainResult

T = TypeVar("T")
DDP_ENV = "TRAINYARD_TRAINER_DDP"  # "0": one process per job even with several GPUs
COLLECTIVE_TIMEOUT = timedelta(minutes=10)  # a rank waiting longer than this in a collective fails
KILL_GRACE_SECONDS = 120.0  # ranks still running this long after the deadline are killed
POLL_SECONDS = 0.2  # how often the launcher forwards progress and checks for a stop request


class DistributedError(RuntimeError):
    """A rank failed, or the ranks disagree at the end."""


# --- the process group ------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run. ``SINGLE`` (inactive) is a plain single
    process: every method is then the identity or a no-op, so the loop has one code path."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # ranks on this host (they share its memory)
    device: torch.device | None = None  # this rank's device; None when inactive
    active: bool = False  # a process group is initialised and used
    control: Any = field(default=None, repr=False)  # gloo group: host-side decisions and gathers

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self, device_name: str) -> str:
        """The device as progress and results show it: "DDP 4 x cuda (NVIDIA H100)"."""
        if not self.active:
            return device_name
        if self.device is not None and self.device.type == "cuda":  # each rank has its own GPU
            device_name = device_name.replace(str(self.device), "cuda", 1)
        return f"DDP {self.world_size} x {device_name}"

    # Decisions: rank 0 takes them, every rank follows.
    def decide(self, choose: Callable[[], T]) -> T:
        """Rank 0's ``choose()``, on every rank (``choose`` runs on rank 0 only)."""
        if not self.active:
            return choose()
        box = [choose() if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]  # type: ignore[return-value]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks (float64)."""
        if not self.active:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total, group=self.control)
        return total.tolist()

    # Data: shards of the training order and of the validation set.
    def samples_per_rank(self, count: int) -> int:
        """How many images of a training set of ``count`` each rank trains on per epoch."""
        if not self.active:
            return count
        return max(count, self.world_size) // self.world_size

    def shard_order(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's part of an epoch's permutation (the same on every rank), like
        DistributedSampler: interleaved, equal lengths, the remainder left out this epoch."""
        if not self.active:
            return order
        if len(order) < self.world_size:
            order = order.repeat(-(-self.world_size // len(order)))
        per_rank = len(order) // self.world_size
        return order[: per_rank * self.world_size][self.rank :: self.world_size]

    def shard(self, count: int) -> range:
        """This rank's contiguous rows of a set of ``count`` (evaluation); all of them when
        inactive or when there are fewer rows than ranks."""
        if not self.active or count < self.world_size:
            return range(count)
        return range(
            count * self.rank // self.world_size, count * (self.rank + 1) // self.world_size
        )

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's ``rows`` (cpu, shards of ``shard``) concatenated in rank order, on every rank."""
        if not self.active:
            return rows
        sizes = [0] * self.world_size
        dist.all_gather_object(sizes, len(rows), group=self.control)
        padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
        padded[: len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous(), group=self.control)
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    # The model.
    def wrap(self, net: nn.Module) -> nn.Module:
        """The module the training steps call: ``net`` in DistributedDataParallel when active.

        Buffers are not broadcast at every forward: the running statistics are not used
        while training and are re-estimated (then ``broadcast_buffers``) before evaluation.
        """
        if not self.active:
            return net
        assert self.device is not None
        return DistributedDataParallel(
            net,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            forward_sync_buffers=False,  # (buffers are still synchronised at construction)
            gradient_as_bucket_view=True,
        )

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Make every rank's buffers (batch-norm statistics) rank 0's."""
        if not self.active:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


SINGLE = Distributed()
_joined: Distributed | None = None  # the process group is per process: joined once


def initialize(
    rank: int,
    world_size: int,
    *,
    local_rank: int = 0,
    local_world_size: int | None = None,
    device: torch.device,
    backend: str | None = None,
) -> Distributed:
    """Join the process group (``MASTER_ADDR``/``MASTER_PORT`` from the environment):
    NCCL on CUDA, gloo on CPU, plus a gloo group for host-side decisions, which keeps
    them off the GPU streams (no device synchronisation per step)."""
    global _joined
    if _joined is not None:
        return _joined
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=world_size,
            timeout=COLLECTIVE_TIMEOUT,
            device_id=device if backend == "nccl" else None,
        )
    control = dist.group.WORLD if backend == "gloo" else dist.new_group(backend="gloo")
    _joined = Distributed(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=local_world_size or world_size,
        device=device,
        active=True,
        control=control,
    )
    return _joined


def from_environment(
    device: str | None = None, env: Mapping[str, str] | None = None
) -> Distributed:
    """The run ``torchrun`` set up (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``LOCAL_WORLD_SIZE``), joined; ``SINGLE`` without ``RANK`` or with one rank.

    ``device``: TrainConfig.device; "cpu" trains on CPU (gloo), otherwise each rank
    takes the GPU of its local rank when CUDA is available.
    """
    env = os.environ if env is None else env
    world_size = int(env.get("WORLD_SIZE", "1"))
    if "RANK" not in env or world_size <= 1:
        return SINGLE
    local_rank = int(env.get("LOCAL_RANK", "0"))
    on_cuda = not (device or "cuda").startswith("cpu") and torch.cuda.is_available()
    return initialize(
        int(env["RANK"]),
        world_size,
        local_rank=local_rank,
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world_size))),
        device=torch.device("cuda", local_rank) if on_cuda else torch.device("cpu"),
    )


def close() -> None:
    """Leave the process group (at the end of a rank's process)."""
    global _joined
    if dist.is_initialized():
        dist.destroy_process_group()
    _joined = None


def job_world_size(device: str | None, slots: int, env: Mapping[str, str] | None = None) -> int:
    """Processes per job on this trainer: one per GPU when it has several, runs one job at a
    time, and the device is not pinned to one GPU or to the CPU; else 1.
    ``TRAINYARD_TRAINER_DDP=0`` turns it off."""
    env = os.environ if env is None else env
    enabled = env.get(DDP_ENV, "")
    if enabled not in ("", "0", "1"):
        raise SystemExit(f"{DDP_ENV}={enabled!r}: expected 0 or 1")
    if enabled == "0" or slots != 1:
        return 1
    if device not in (None, "cuda") or not torch.cuda.is_available():
        return 1
    return max(1, torch.cuda.device_count())


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A hash of a state dict's names and bytes (ranks compare their final weights with it)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# --- the runtime's launcher -------------------------------------------------------------


@dataclass
class SpawnedRun:
    """What ``spawn_train`` returns: rank 0's result and what each rank reported."""

    result: TrainResult
    weight_digests: list[str]  # per rank: weights_digest of its final checkpoint
    progress_calls: list[int]  # per rank: progress reports it made (only rank 0 reports)


def spawn_train(
    samples: list[Sample],
    images: Mapping[str, bytes],
    config: TrainConfig,
    world_size: int,
    *,
    progress: Callable[[Progress], None] = lambda p: None,
    should_stop: Callable[[], str | None] = lambda: None,
) -> SpawnedRun:
    """``training.train`` in ``world_size`` processes (one per GPU; gloo on CPU when
    ``config.device`` is "cpu"), from this process: rank 0's progress is forwarded to
    ``progress``, ``should_stop`` is polled here and a stop request sent to rank 0.

    Ranks are forked from a server process that has imported the trainer once
    (multiprocessing "forkserver"; it never touches CUDA), so only the first job waits for
    the imports. DistributedError if a rank fails, if the ranks end with different weights,
    or if they still run ``KILL_GRACE_SECONDS`` after the deadline.
    """
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["trainyard.services.trainer.training"])
    messages = context.Queue()
    stop_event = context.Event()
    stop_reasons = context.Queue()
    port = _free_port()
    processes = mp.start_processes(
        _rank_main,
        args=(
            world_size,
            port,
            samples,
            images,
            config,
            messages,
            stop_event,
            stop_reasons,
        ),
        nprocs=world_size,
        join=False,
        daemon=True,
        start_method="forkserver",
    )
    kill_at = None if config.deadline is None else config.deadline + KILL_GRACE_SECONDS
    result: bytes | None = None
    digests: dict[int, str] = {}
    calls = [0] * world_size

    def receive() -> None:
        nonlocal result
        while True:
            try:
                kind, rank, body = messages.get_nowait()
            except queue.Empty:
                return
            if kind == "progress":
                calls[rank] += 1
                if rank == 0:
                    progress(body)
            elif kind == "result":
                result = body
            elif kind == "digest":
                digests[rank] = body

    try:
        while True:
            receive()
            if not stop_event.is_set() and (reason := should_stop()):
                stop_reasons.put(reason)
                stop_event.set()
            if kill_at is not None and time.time() > kill_at:
                raise DistributedError(
                    f"the ranks still ran {KILL_GRACE_SECONDS:.0f} s after the deadline"
                )
            try:
                if processes.join(timeout=POLL_SECONDS, grace_period=5.0):
                    break
            except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
                raise DistributedError(
                    f"rank {exc.error_index} failed: {_last_line(str(exc))}"
                ) from None
        receive()
    finally:
        for process in processes.processes:
            if process.is_alive():
                process.kill()
            process.join()
    if result is None or len(digests) != world_size:
        raise DistributedError("the ranks ended without a result")
    if len(set(digests.values())) != 1:
        raise DistributedError(f"the ranks ended with different weights: {digests}")
    loaded: TrainResult = torch.load(io.BytesIO(result), map_location="cpu", weights_only=False)
    return SpawnedRun(loaded, [digests[r] for r in range(world_size)], calls)


def _rank_main(
    local_rank: int,
    world_size: int,
    port: int,
    samples: list[Sample],
    images: Mapping[str, bytes],
    config: TrainConfig,
    messages: Any,
    stop_event: Any,
    stop_reasons: Any,
) -> None:
    """One rank started by ``spawn_train``: the environment torchrun would set, then train."""
    from trainyard.services.trainer import training

    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))  # ranks share the cores
    requested: list[str] = []

    def should_stop() -> str | None:  # called on rank 0 only (Distributed.decide)
        if not requested and stop_event.is_set():
            requested.append(stop_reasons.get())
        return requested[0] if requested else None

    ddp = from_environment(config.device)
    try:
        result = training.train(
            samples,
            images,
            config,
            progress=lambda p: messages.put(("progress", local_rank, p)),
            should_stop=should_stop,
            ddp=ddp,
        )
        messages.put(("digest", local_rank, weights_digest(result.checkpoint["state_dict"])))
        if ddp.is_main:
            buffer = io.BytesIO()
            torch.save(result, buffer)  # bytes, not shared-memory tensors: this process ends now
            messages.put(("result", local_rank, buffer.getvalue()))
    finally:
        close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


# --- standalone: torchrun ---------------------------------------------------------------


def read_folder(
    folder: Path, train_ratio: Decimal, seed: int
) -> tuple[list[Sample], dict[str, bytes]]:
    """The images of ``folder/<label>/<file>`` as samples, split into TRAIN and EVAL the way a
    dataset version is (seeded, stratified: services/dataset/split.py)."""
    from trainyard.services.dataset.split import assign_usage
    from trainyard.services.trainer.training import Sample

    files = sorted(p for p in folder.glob("*/*") if p.is_file() and not p.name.startswith("."))
    labelled = [(p.relative_to(folder).as_posix(), p.parent.name) for p in files]
    usage = assign_usage(labelled, train_ratio, seed)
    samples = [Sample(image_id, label, usage[image_id]) for image_id, label in labelled]
    return samples, {image_id: (folder / image_id).read_bytes() for image_id, _ in labelled}


def main(argv: Sequence[str] | None = None) -> None:
    """Train on an image folder, data-parallel when started by torchrun; rank 0 writes
    OUT/checkpoint.pt and OUT/metrics.json and prints the progress."""
    from trainyard.services.trainer import training

    parser = argparse.ArgumentParser(
        prog="python -m trainyard.services.trainer.distributed",
        description="Train an image classifier on FOLDER/<label>/<image> (torchrun: one process per GPU).",
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--preference",
        default="balance",
        choices=["performance_first", "balance", "accuracy_first"],
    )
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="maximum training duration (S5)"
    )
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-ratio", default="0.8")
    parser.add_argument("--device", default=None, help="cpu, or cuda (the default when available)")
    args = parser.parse_args(argv)

    ddp = from_environment(args.device)
    try:
        samples, images = read_folder(args.folder, Decimal(args.train_ratio), args.seed)
        config = training.TrainConfig(
            classes=sorted({s.label for s in samples}),
            preference=args.preference,
            deadline=time.time() + 60 * args.minutes,
            seed=args.seed,
            device=args.device,
            max_epochs=args.max_epochs,
        )

        last = [0.0]

        def progress(p: Progress) -> None:  # rank 0 only: train() silences the others
            if time.time() - last[0] >= 10 or (p.steps_total and p.step == p.steps_total):
                last[0] = time.time()
                print(
                    f"epoch {p.epoch}/{p.epochs_total}  step {p.step}/{p.steps_total}  loss {p.loss:.4f}  "
                    f"validation accuracy {p.val_accuracy}  {p.images_per_second:.0f} images/s  {p.device}",
                    file=sys.stderr,
                )

        result = training.train(samples, images, config, progress=progress, ddp=ddp)
        if ddp.is_main:
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save(result.checkpoint, args.out / "checkpoint.pt")
            metrics = {
                "evaluation": result.evaluation,
                "history": result.history,
                "stop_reason": result.stop_reason,
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "device": result.device,
                "architecture": result.arch,
                "resolution": result.resolution,
                "world_size": ddp.world_size,
            }
            (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            print(
                f"accuracy {result.evaluation['accuracy']:.4f}  {result.stop_reason}  -> {args.out}",
                file=sys.stderr,
            )
    finally:
        close()


if __name__ == "__main__":
    main()
