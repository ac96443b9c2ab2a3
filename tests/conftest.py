"""Fixtures shared by several test modules.

The sweep modules train probes on one small demo corpus in CaFE's layout with a tiny random CARE;
preparing it takes seconds, so it is built once per session and must be treated as read-only. A
test that damages audio, a manifest or a checkpoint builds its own copy with `make_demo_cafe`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Short probe trainings: enough for an evaluation to pick a dev-best model, and no more.
SWEEP_STEPS = ["config.runner.total_steps=8", "config.runner.eval_step=4", "config.runner.log_step=4",
               "config.runner.save_step=4", "config.downstream_expert.datarc.num_workers=0"]


def make_demo_cafe(base: Path, n_actors: int = 10) -> Path:
    """`base/demo` (audio), `base/data/emotion_cafe` (prepared manifest) and `base/tiny_care` (weights)."""
    import torch

    from fixtures_corpora import prepare_demo_cafe, save_tiny_care

    torch.set_num_threads(1)
    prepare_demo_cafe(base / "demo", base / "data" / "emotion_cafe", n_actors=n_actors)
    save_tiny_care(base / "tiny_care")
    return base


def copy_demo_cafe(src: Path, dst: Path) -> Path:
    """A private copy of a `make_demo_cafe` folder whose manifest points at the copied audio: for tests
    that damage files (seconds cheaper than preparing the corpus again)."""
    import shutil

    shutil.copytree(src, dst)
    manifest = dst / "data" / "emotion_cafe" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(str(src / "demo"), str(dst / "demo")))
    return dst


@pytest.fixture
def demo_cafe_copy(demo_cafe, tmp_path) -> Path:
    """The session's demo corpus, copied for one test that may damage it."""
    return copy_demo_cafe(demo_cafe, tmp_path / "demo_cafe")


@pytest.fixture(scope="session")
def demo_cafe(tmp_path_factory) -> Path:
    """A read-only demo corpus + tiny CARE for the whole session (see the module docstring)."""
    return make_demo_cafe(tmp_path_factory.mktemp("demo_cafe"))


@pytest.fixture(autouse=True)
def _restore_s3prl_globals():
    """s3prl's `run_downstream.main()` replaces `builtins.isinstance` (one more wrapper per call) and
    torch's tensor sharing strategy. Tests that call the runner in-process must not leak that into the
    tests after them, so both are put back after every test."""
    import builtins
    import sys

    isinstance_ = builtins.isinstance
    torch = sys.modules.get("torch")
    sharing = torch.multiprocessing.get_sharing_strategy() if torch is not None else None
    yield
    builtins.isinstance = isinstance_
    if torch is not None and sharing is not None:
        torch.multiprocessing.set_sharing_strategy(sharing)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: the test machine's two cores are shared, and float
    reductions then match the one-thread subprocesses some tests compare against."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
