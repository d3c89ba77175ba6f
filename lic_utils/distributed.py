"""Where training runs: the device, the processes torchrun starts (DistributedDataParallel), and the
random-number state that makes a run resumable bit for bit. The trainer (lic_utils.train) calls these;
a reader of the training loop can skip this module."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch


# --- devices and processes -------------------------------------------------------------------------
def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: cuda (the local rank's GPU) → mps → cpu; anything else is passed to torch.device,
    and refused in one line when it names no device, or one this machine does not have."""
    if name == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "auto":
        from lic_utils.errors import LicError

        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise LicError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
        usable = {"cuda": torch.cuda.is_available, "mps": lambda: getattr(torch.backends, "mps", None) is not None
                  and torch.backends.mps.is_available()}.get(device.type, lambda: device.type in ("cpu", "meta"))
        if not usable():
            raise LicError(f"device {name!r} is not available on this machine (no {device.type.upper()} "
                           "device torch can use): use --device cpu, or auto to take the best there is")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False  # we called init_process_group, so we destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistEnv:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    env = DistEnv(rank=int(os.environ["RANK"]), world=world,
                  local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                  local_world=int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        use_cuda = cuda and device_name in ("auto", "cuda") or device_name.startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        env.owns_group = True
    return env


def finish_distributed(env: DistEnv) -> None:
    """barrier() then destroy_process_group(): a bare destroy aborted gloo processes (torch 2.14.1)."""
    import torch.distributed as dist

    if env.world > 1 and dist.is_initialized():
        dist.barrier()
        if env.owns_group:
            dist.destroy_process_group()


def any_rank(reason: str | None, device) -> str | None:
    """A step is bad on every rank if it is bad on one (ranks must skip together)."""
    import torch.distributed as dist

    flag = torch.tensor([0.0 if reason is None else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0 and reason is None:
        return "bad step on another rank"
    return reason


# --- RNG state -------------------------------------------------------------------------------------
def get_rng_state() -> dict:
    """torch / numpy / python (/ cuda) RNG states as plain objects (safe for weights_only loads)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = np.asarray(keys, dtype=np.int64).astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
