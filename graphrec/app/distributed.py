"""Multi-process training through torch.distributed + DistributedDataParallel (no home-made engine).

Launch on one or more machines with torchrun, which sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR:

    torchrun --nproc-per-node 4 -m graphrec.app.distributed WORKSPACE --epochs 50
    torchrun --nnodes 2 --node-rank 0 --master-addr host0 --nproc-per-node 8 -m graphrec.app.distributed WS

Every rank holds the whole graph and the full model (data parallel): each batch is cut into equal shares,
DDP averages the gradients, and the loss is scaled so the update equals the single-process one. Rank 0
validates, decides early stopping (broadcast to all) and writes model/. Backend: NCCL on GPUs, gloo on CPU.
`spawn_train` runs the same on one machine without torchrun (tests use it with gloo and 2 processes).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from graphrec.app.cli import app
from graphrec.core.workspace import Workspace
from graphrec.stages.train import run_train


def init_from_env() -> torch.device:
    """Join the process group torchrun describes; returns this rank's device."""
    cuda = torch.cuda.is_available() and os.environ.get("GRAPHREC_DDP_CPU") != "1"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    return (
        torch.device(f"cuda:{torch.cuda.current_device()}")
        if cuda
        else torch.device("cpu")
    )


def _worker(
    rank: int,
    world: int,
    port: int,
    workspace: str,
    settings: dict[str, Any],
    resume: bool,
) -> None:

    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "GRAPHREC_DDP_CPU": "1",
        }
    )
    torch.set_num_threads(1)
    device = init_from_env()
    try:
        run_train(
            workspace,
            resume=resume,
            **{**settings, "device": str(device), "progress": False},
        )
    finally:
        dist.destroy_process_group()


def spawn_train(
    workspace: str | Path | Workspace,
    world_size: int = 2,
    resume: bool = False,
    **settings: Any,
) -> None:
    """Train with `world_size` CPU processes (gloo) on this machine; the result lands in WORKSPACE/model/."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = str(workspace.path if isinstance(workspace, Workspace) else workspace)
    mp.spawn(
        _worker,
        args=(world_size, port, path, settings, resume),
        nprocs=world_size,
        join=True,
    )


def main(argv: list[str] | None = None) -> None:
    """torchrun entry point: the `graphrec train` options, run on every rank."""
    device = init_from_env()

    try:
        args = list(sys.argv[1:] if argv is None else argv)
        if "--device" not in args:
            args += ["--device", str(device)]
        app(["train", *args], standalone_mode=False)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
