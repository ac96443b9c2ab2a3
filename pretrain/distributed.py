"""Who am I in a multi-process job: torchrun's environment, else Slurm's (``srun``), else alone.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
``srun`` sets ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and a compressed node list
(``gpu[01-04,07]``) instead. Reading both here, once, lets the trainer and ``care-pretrain targets``
run under either launcher with the same code, and lets the rules be unit-tested without a cluster.
The first host of the node list is found by parsing it here rather than by calling ``scontrol``,
which exists only on cluster nodes.

    python -m pretrain.distributed master-addr      # prints the rendezvous host (for sbatch scripts)
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Mapping, Optional

# Port when neither MASTER_PORT nor a Slurm job id says otherwise (torchrun's own default).
DEFAULT_PORT = 29500
# Under Slurm without MASTER_PORT: SLURM_PORT_BASE + job id mod SLURM_PORT_SPAN, so that two jobs
# sharing a node rarely pick the same port, and every task of one job picks the same one.
SLURM_PORT_BASE, SLURM_PORT_SPAN = 20000, 10000
# Node-list variables, most specific first: the step's nodes (inside srun), then the job's.
NODELIST_VARS = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")


class LaunchError(ValueError):
    """An environment that names a multi-process job but not completely (names the variable)."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a multi-process job."""

    rank: int
    world_size: int
    local_rank: int
    launcher: str
    """``torchrun`` (the env:// variables are all set) or ``slurm`` (srun tasks)."""
    master_addr: str = ""
    master_port: int = DEFAULT_PORT


def _int(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"environment variable {name}={value!r} is not an integer") from None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``node[01-04],gpu7`` -> ``node01``.

    A list is comma-separated at the top level; a bracket holds comma-separated numbers or
    ranges (zero padding kept), and a name may hold several brackets (``r[1-2]-n[3,5]`` -> ``r1-n3``).
    """
    nodelist = nodelist.strip()
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    first = nodelist[:end]

    def lowest(match: "re.Match[str]") -> str:
        return match.group(1).split(",")[0].split("-")[0]

    host = re.sub(r"\[([^\[\]]*)\]", lowest, first)
    if not host or re.search(r"[\[\]\s]", host):
        raise LaunchError(f"cannot read a host name from the Slurm node list {nodelist!r}")
    return host


def master_addr(env: Mapping[str, str]) -> str:
    """Rank 0's host: ``MASTER_ADDR``, else the first host of Slurm's node list, else ''."""
    addr = env.get("MASTER_ADDR", "")
    if addr:
        return addr
    nodelist = next((env[k] for k in NODELIST_VARS if env.get(k)), "")
    return first_host(nodelist) if nodelist else ""


def from_environ(env: Optional[Mapping[str, str]] = None) -> Optional[DistEnv]:
    """The job this process belongs to, or None when it runs alone.

    torchrun's variables win when ``RANK`` is set (torchrun started inside a Slurm job is the
    usual multi-node recipe). Otherwise a Slurm task with ``SLURM_NTASKS`` > 1 is one rank of an
    ``srun`` job step. A single Slurm task (an ``salloc`` shell, a one-task batch script) runs
    alone. Caveat: a batch script of several tasks that runs this program itself, not through
    ``srun``, looks like rank 0 of a job whose other ranks never come; launch with ``srun``.
    """
    env = os.environ if env is None else env
    if "RANK" in env:
        missing = [k for k in ("WORLD_SIZE", "LOCAL_RANK") if k not in env]
        if missing:
            raise LaunchError(f"RANK is set but {', '.join(missing)} is not: start the job with torchrun, "
                              f"or unset RANK")
        return DistEnv(rank=_int(env, "RANK"), world_size=_int(env, "WORLD_SIZE"),
                       local_rank=_int(env, "LOCAL_RANK"), launcher="torchrun",
                       master_addr=env.get("MASTER_ADDR", ""),
                       master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT)
    if "SLURM_PROCID" not in env or "SLURM_NTASKS" not in env:
        return None
    world = _int(env, "SLURM_NTASKS")
    if world <= 1:
        return None
    rank = _int(env, "SLURM_PROCID")
    local_rank = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
    if not 0 <= rank < world:
        raise LaunchError(f"SLURM_PROCID={rank} is outside SLURM_NTASKS={world}")
    addr = master_addr(env)
    if not addr:
        raise LaunchError(f"a {world}-task Slurm step needs MASTER_ADDR or one of {', '.join(NODELIST_VARS)} "
                          f"to find rank 0's host")
    if "MASTER_PORT" in env:
        port = _int(env, "MASTER_PORT")
    elif "SLURM_JOB_ID" in env:
        port = SLURM_PORT_BASE + _int(env, "SLURM_JOB_ID") % SLURM_PORT_SPAN
    else:
        port = DEFAULT_PORT
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, launcher="slurm",
                   master_addr=addr, master_port=port)


def init_process_group(denv: DistEnv, backend: str) -> None:
    """Join the job's process group: env:// under torchrun, a TCP rendezvous at rank 0's host
    under Slurm (the same store torchrun's env:// would build from those variables)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if denv.launcher == "torchrun":
        dist.init_process_group(backend=backend)
    else:
        host = f"[{denv.master_addr}]" if ":" in denv.master_addr else denv.master_addr
        dist.init_process_group(backend=backend, init_method=f"tcp://{host}:{denv.master_port}",
                                rank=denv.rank, world_size=denv.world_size)


def all_sum(x):
    """Sum a tensor over the ranks of the process group, in place; alone, return it as is."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def cuda_device(local_rank: int, visible: Optional[int] = None) -> str:
    """This rank's GPU. Slurm's ``--gpus-per-task``/``--gpu-bind`` show each task one GPU (then it
    is ``cuda:0``); torchrun and ``--gres=gpu:G`` show all of the node's (then ``cuda:local_rank``)."""
    if visible is None:
        import torch

        visible = torch.cuda.device_count()
    if visible < 1:
        raise LaunchError("a CUDA device was asked for but none is visible to this process")
    if visible == 1:
        return "cuda:0"
    if local_rank >= visible:
        raise LaunchError(f"local rank {local_rank} has no GPU of its own ({visible} visible): start at most "
                          f"{visible} processes per node")
    return f"cuda:{local_rank}"


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["master-addr"]:
        print("usage: python -m pretrain.distributed master-addr", file=sys.stderr)
        return 2
    try:
        print(master_addr(os.environ) or "localhost")
    except LaunchError as e:
        print(f"pretrain.distributed: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
