"""Pre-training across processes and machines, on one machine: torchrun on one node, torchrun on two
nodes (two agents on localhost meeting through a c10d rendezvous), and srun-style Slurm tasks, all
with gloo on CPU; the launch environment rules of ``pretrain.distributed``; and the Slurm recipes in
``examples/slurm/`` run against a stub ``srun``, their commands parsed by the real argument parsers.

The one-node run is held to the independent one-process reference of test_train.py, and the
two-node and srun runs to the one-node run, to rounding (they are bit-identical as a rule): the
same two ranks see the same batches and sum the same two numbers, whatever launched them.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.distributed import (
    SLURM_PORT_BASE,
    SLURM_PORT_SPAN,
    DistEnv,
    LaunchError,
    cuda_device,
    first_host,
    from_environ,
)
from test_train import CKPT_LAST, ROOT, _env, assert_matches_reference, independent_reference, make_cache, read_losses, tiny_args

STEPS = dict(dropout=0.0, max_steps=4, eval_interval=4, ckpt_interval=4)
"""Short runs: the cost of a launch is its imports; four steps cover two epochs of the tiny cache."""
LAUNCH_TIMEOUT = 300


def free_port(lo: int = 0, hi: int = 0) -> int:
    """A port nothing listens on (in ``[lo, hi)`` when given)."""
    for port in ([0] if not lo else random.Random().sample(range(lo, hi), 200)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in [{lo}, {hi})")


def launch(cmds: list, what: str, envs: list = None) -> None:
    """Start every command at once and wait for all; on a failure or a hang, stop the others and
    show the stderr of each (kept in files: a full pipe would block a chatty process)."""
    envs = envs or [_env()] * len(cmds)
    logs = [tempfile.TemporaryFile() for _ in cmds]
    procs = [subprocess.Popen(c, cwd=ROOT, env=e, stdout=subprocess.DEVNULL, stderr=log)
             for c, e, log in zip(cmds, envs, logs)]
    try:
        for p in procs:
            p.wait(timeout=LAUNCH_TIMEOUT)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        log.seek(0)
        err = log.read().decode(errors="replace")[-3000:]
        log.close()
        assert p.returncode == 0, f"{what}: a process exited with {p.returncode}:\n{err}"


TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory) -> tuple:
    return independent_reference(tiny_args(cache, tmp_path_factory.mktemp("unused") / "run", **STEPS))


@pytest.fixture(scope="module")
def one_node(cache, tmp_path_factory) -> Path:
    """torchrun --standalone: one node, two ranks."""
    out = tmp_path_factory.mktemp("one_node") / "run"
    launch([TORCHRUN + ["--standalone", "--nproc-per-node=2", "-m", "pretrain.train",
                        *tiny_args(cache, out, **STEPS)]], "torchrun 1 node x 2")
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """The same step losses and final weights, to rounding. The same two ranks see the same batches
    and sum the same two numbers whatever launched them, and the runs are bit-identical as a rule;
    the tolerance covers a CPU kernel that rounds differently in another process (BLAS code paths
    can depend on memory alignment), which Adam then amplifies in the zero-gradient ``k_proj.bias``
    (see ``assert_matches_reference``)."""
    la = [(l["step"], l["semantic"], l["acoustic"]) for l in read_losses(a)]
    lb = [(l["step"], l["semantic"], l["acoustic"]) for l in read_losses(b)]
    assert [x[0] for x in la] == [x[0] for x in lb] == list(range(1, STEPS["max_steps"] + 1))
    np.testing.assert_allclose([x[1:] for x in lb], [x[1:] for x in la], rtol=1e-5,
                               err_msg=f"step losses differ:\n{la}\n{lb}")
    sa = torch.load(a / CKPT_LAST, weights_only=True)["model"]
    sb = torch.load(b / CKPT_LAST, weights_only=True)["model"]
    assert sa.keys() == sb.keys()
    for k in sa:
        if not k.endswith("k_proj.bias"):
            torch.testing.assert_close(sb[k], sa[k], rtol=1e-5, atol=1e-5, msg=k)


# ------------------------------------------------------------------------------------------
# real launches
# ------------------------------------------------------------------------------------------
def test_one_node_two_ranks_match_the_independent_reference(one_node, reference):
    assert_matches_reference(one_node, reference)


def test_two_nodes_c10d_give_the_one_node_run(cache, one_node, tmp_path):
    """torchrun --nnodes 2 --rdzv-backend c10d: two agents (two 'machines') of one rank each."""
    out = tmp_path / "two_nodes"
    port = free_port()
    agent = TORCHRUN + ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                        f"--rdzv-endpoint=localhost:{port}", "--rdzv-id=care-multinode-test", "--max-restarts=0",
                        "-m", "pretrain.train", *tiny_args(cache, out, **STEPS)]
    launch([agent, agent], "torchrun 2 nodes x 1")
    assert_same_run(out, one_node)


def test_srun_tasks_give_the_one_node_run(cache, one_node, tmp_path):
    """Two processes with only the environment ``srun`` gives its tasks (no torchrun variables): one
    task on each of two nodes, rank 0's host from the node list, the port from the job id."""
    out = tmp_path / "srun"
    port = free_port(SLURM_PORT_BASE, SLURM_PORT_BASE + SLURM_PORT_SPAN)
    job_id = 7 * SLURM_PORT_SPAN + port - SLURM_PORT_BASE  # a job id whose derived port is free
    envs = [dict(_env(), SLURM_PROCID=str(rank), SLURM_NTASKS="2", SLURM_LOCALID="0", SLURM_NODEID=str(rank),
                 SLURM_JOB_ID=str(job_id), SLURM_JOB_NODELIST="localhost,other-node",
                 SLURM_STEP_NODELIST="localhost,other-node") for rank in range(2)]
    assert from_environ(envs[1]) == DistEnv(rank=1, world_size=2, local_rank=0, launcher="slurm",
                                            master_addr="localhost", master_port=port)
    cmd = [sys.executable, "-m", "pretrain.train", *tiny_args(cache, out, **STEPS)]
    launch([cmd, cmd], "srun-style tasks", envs)
    assert_same_run(out, one_node)


# ------------------------------------------------------------------------------------------
# launch environment rules
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nodelist, host", [
    ("node[01-04]", "node01"),
    ("node[01-04],gpu7", "node01"),
    ("gpu7,node[01-04]", "gpu7"),
    ("a100-[3,5-9]", "a100-3"),
    ("node[007,010-012]", "node007"),
    ("rack[2-3]-n[05-08]", "rack2-n05"),
    ("localhost", "localhost"),
    (" node1 ", "node1"),
])
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_first_host_refuses_a_broken_list():
    with pytest.raises(LaunchError, match="node list 'node\\[01-04'"):
        first_host("node[01-04")


def test_torchrun_environment_wins_over_slurm():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234",
           "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "n[1-2]"}
    assert from_environ(env) == DistEnv(3, 8, 1, "torchrun", "10.0.0.1", 1234)
    with pytest.raises(LaunchError, match="RANK is set but WORLD_SIZE, LOCAL_RANK is not"):
        from_environ({"RANK": "0"})
    with pytest.raises(LaunchError, match="RANK='x' is not an integer"):
        from_environ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_slurm_environment_of_an_srun_task():
    base = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
            "SLURM_JOB_NODELIST": "gpu[01-04]", "SLURM_STEP_NODELIST": "gpu[03-04]"}
    assert from_environ(base) == DistEnv(5, 8, 1, "slurm", "gpu03", 20000 + 123456 % 10000)
    # the user's MASTER_ADDR / MASTER_PORT win; the job's list serves when the step's is absent
    assert from_environ({**base, "MASTER_ADDR": "head", "MASTER_PORT": "4000"}).master_addr == "head"
    assert from_environ({**base, "MASTER_PORT": "4000"}).master_port == 4000
    no_step = {k: v for k, v in base.items() if k != "SLURM_STEP_NODELIST"}
    assert from_environ(no_step).master_addr == "gpu01"
    # one task (salloc shell, one-task batch script) and no Slurm at all: alone
    assert from_environ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NODELIST": "gpu01"}) is None
    assert from_environ({}) is None
    with pytest.raises(LaunchError, match="needs MASTER_ADDR or one of SLURM_STEP_NODELIST"):
        from_environ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    with pytest.raises(LaunchError, match="SLURM_PROCID=8 is outside SLURM_NTASKS=8"):
        from_environ({**base, "SLURM_PROCID": "8"})


def test_each_rank_gets_its_own_gpu_or_the_one_it_is_shown():
    assert cuda_device(3, visible=8) == "cuda:3"
    assert cuda_device(3, visible=1) == "cuda:0"  # srun --gpus-per-task=1: each task sees one GPU
    with pytest.raises(LaunchError, match="local rank 4 has no GPU of its own \\(4 visible\\)"):
        cuda_device(4, visible=4)
    with pytest.raises(LaunchError, match="none is visible"):
        cuda_device(0, visible=0)


def test_targets_workers_take_their_shard_from_srun(monkeypatch):
    from pretrain.targets.extract import env_rank

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "cpu[1-2]")
    assert env_rank() == (2, 4)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert env_rank() is None


# ------------------------------------------------------------------------------------------
# examples/slurm recipes
# ------------------------------------------------------------------------------------------
SLURM_DIR = ROOT / "examples" / "slurm"
STUB = """#!/usr/bin/env bash
"$STUB_PYTHON" -c 'import json, os, sys; open(os.environ["STUB_LOG"], "a").write(json.dumps(sys.argv[1:]) + "\\n")' \\
  "$(basename "$0")" "$@"
if [ "$(basename "$0")" = srun ] && [ -n "${STUB_SRUN_PIDFILE:-}" ]; then  # a step that runs until stopped
  echo $$ > "$STUB_SRUN_PIDFILE"
  exec sleep 60
fi
"""


def sbatch_env(tmp_path: Path, env: dict) -> dict:
    """The environment of a batch script, with ``srun`` and ``scontrol`` replaced by stubs that record
    their arguments in ``tmp_path/stub.log``."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name in ("srun", "scontrol"):
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(0o755)
    (tmp_path / "stub.log").unlink(missing_ok=True)
    return dict(_env(), PATH=f"{stubs}:{Path(sys.executable).parent}:{os.environ['PATH']}",
                STUB_LOG=str(tmp_path / "stub.log"), STUB_PYTHON=sys.executable, SLURM_SUBMIT_DIR=str(ROOT),
                SLURM_JOB_ID="4242", **env)


def stub_calls(tmp_path: Path) -> list:
    log = tmp_path / "stub.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_sbatch(script: str, tmp_path: Path, env: dict, args: tuple = ()) -> list:
    """Run an sbatch script as Slurm would start it; returns the recorded ``srun`` command lines."""
    proc = subprocess.run(["bash", str(SLURM_DIR / script), *args], cwd=tmp_path, env=sbatch_env(tmp_path, env),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = stub_calls(tmp_path)
    assert all(c[0] == "srun" for c in calls)
    return [c[1:] for c in calls]


def program(srun_argv: list) -> tuple:
    """(program, its arguments) of an ``srun [--opt=value ...] program args`` line."""
    i = next(i for i, a in enumerate(srun_argv) if not a.startswith("-"))
    return srun_argv[i], srun_argv[i + 1:]


def parse(parse_args, argv: list, what: str):
    try:
        return parse_args(argv)
    except SystemExit:
        pytest.fail(f"{what}: the real parser rejects {argv}")


def test_slurm_scripts_are_valid_bash():
    scripts = sorted(SLURM_DIR.glob("*.sbatch"))
    assert [p.name for p in scripts] == ["pretrain.sbatch", "targets.sbatch"]
    for p in scripts:
        proc = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{p}: {proc.stderr}"
        assert "#SBATCH --requeue" in p.read_text()


def test_targets_sbatch_gives_each_array_task_its_shard(tmp_path):
    from pretrain.cli import build_parser

    calls = run_sbatch("targets.sbatch", tmp_path, {"SLURM_ARRAY_TASK_ID": "13", "SLURM_ARRAY_TASK_MIN": "10",
                                                    "SLURM_ARRAY_TASK_COUNT": "8", "AUDIO": "/corpus"})
    assert len(calls) == 1
    prog, argv = program(calls[0])
    assert prog == "care-pretrain"
    args = parse(build_parser().parse_args, argv, "care-pretrain")
    assert (args.command, args.shard, args.audio, args.acoustic, args.whisper_model, args.device) == (
        "targets", "3/8", "/corpus", "pase+", "large-v3", "cuda")
    assert args.text_encoder == "roberta-base" and args.pase_ckpt and args.pase_config


@pytest.mark.parametrize("launcher", ["torchrun", "srun"])
def test_pretrain_sbatch_launches_the_trainer_and_resumes_on_requeue(tmp_path, launcher):
    from torch.distributed.run import get_args_parser

    from pretrain.config import load_config
    from pretrain.train import parse_args

    out_dir = tmp_path / "run"
    env = {"LAUNCHER": launcher, "OUT_DIR": str(out_dir), "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "8",
           "SLURM_JOB_NODELIST": "gpu[03-04]"}

    def train_args(calls: list):
        assert len(calls) == 1
        prog, argv = program(calls[0])
        if launcher == "torchrun":
            assert prog == "torchrun"
            tr = parse(get_args_parser().parse_args, argv, "torchrun")
            assert (tr.nnodes, tr.nproc_per_node, tr.rdzv_backend, tr.rdzv_endpoint, tr.module) == (
                "2", "8", "c10d", "gpu03:29500", True)
            assert tr.training_script == "pretrain.train"
            argv = tr.training_script_args
        else:
            assert (prog, argv[:2]) == ("python", ["-m", "pretrain.train"])
            argv = argv[2:]
        args = parse(parse_args, argv, "pretrain.train")
        tc = load_config(str(ROOT / args.config), args.overrides)  # every key=value is a known key
        assert (tc.out_dir, tc.target_cache, tc.batch_size) == (str(out_dir), "data/targets/msp_podcast", 128)
        return args, tc

    args, tc = train_args(run_sbatch("pretrain.sbatch", tmp_path, env, ("max_steps=1000",)))
    assert not args.resume and tc.max_steps == 1000
    out_dir.mkdir()
    (out_dir / CKPT_LAST).write_bytes(b"")  # what a requeued job finds
    args, _ = train_args(run_sbatch("pretrain.sbatch", tmp_path, env))
    assert args.resume


def test_pretrain_sbatch_requeues_itself_when_the_time_limit_nears(tmp_path):
    """Slurm's USR1 (``--signal=B:USR1@300``) reaches the script while the step runs: it asks for a
    requeue and keeps waiting until Slurm stops the step."""
    pidfile = tmp_path / "srun.pid"
    env = sbatch_env(tmp_path, {"OUT_DIR": str(tmp_path / "run"), "SLURM_JOB_NUM_NODES": "1",
                                "SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_NODELIST": "gpu01",
                                "STUB_SRUN_PIDFILE": str(pidfile)})
    proc = subprocess.Popen(["bash", str(SLURM_DIR / "pretrain.sbatch")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGUSR1)
        while not any(c[0] == "scontrol" for c in stub_calls(tmp_path)):
            assert time.time() < deadline, "no scontrol requeue after USR1"
            time.sleep(0.05)
        assert proc.poll() is None  # still waiting for the step
        os.kill(int(pidfile.read_text()), signal.SIGTERM)  # Slurm stops the step for the requeue
        assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert ["scontrol", "requeue", "4242"] in stub_calls(tmp_path)
