"""Registration into s3prl: CARE upstreams and project tasks appear, stock ones stay, defaults are filled."""

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from care_superb import launcher
from care_superb.checkout import HUB_LINE, find_package_dir, register_checkout
from care_superb.s3prl_registry import TASKS_DIR, project_tasks, register

PAPER_TASKS = {
    "emotion_iemocap4", "emotion_iemocap6", "emotion_meld", "sentiment_mosi", "depression_daicwoz",
    "emotion_ravdess_song", "emotion_cafe", "emotion_emodb", "emotion_mspimprov",
}


def test_project_provides_the_nine_paper_tasks():
    assert set(project_tasks()) == PAPER_TASKS


def test_register_adds_care_and_keeps_stock_upstreams():
    register()
    from s3prl import hub

    for name in ("care", "care_acoustic", "care_semantic", "wavlm", "wavlm_local", "hubert", "hubert_local"):
        assert callable(getattr(hub, name)), name
    register()  # idempotent
    import s3prl.downstream

    assert list(s3prl.downstream.__path__).count(str(TASKS_DIR)) == 1


def test_s3prl_import_path_resolves_to_the_shared_expert():
    register()
    from downstream_tasks.expert import DownstreamExpert

    for task in ("emotion_cafe", "emotion_mspimprov"):
        module = importlib.import_module(f"s3prl.downstream.{task}.expert")
        assert module.DownstreamExpert is DownstreamExpert
    stock = importlib.import_module("s3prl.downstream.emotion.expert")
    assert stock.DownstreamExpert is not DownstreamExpert


@pytest.fixture()
def fake_s3prl_tree(tmp_path, monkeypatch):
    """`s3prl.__file__` pointed at a tree where the stock task `emotion` ships its config.yaml (a
    source checkout) and `asr` does not (the PyPI wheel ships no task configs)."""
    import s3prl

    pkg = tmp_path / "tree" / "s3prl"
    (pkg / "downstream" / "emotion").mkdir(parents=True)
    (pkg / "downstream" / "emotion" / "config.yaml").write_text("runner: {}\n")
    (pkg / "downstream" / "asr").mkdir(parents=True)
    monkeypatch.setattr(s3prl, "__file__", str(pkg / "__init__.py"))
    return pkg


def test_launcher_fills_config_for_project_and_stock_tasks(monkeypatch, fake_s3prl_tree):
    monkeypatch.setattr(launcher.torch.cuda, "is_available", lambda: False)
    ours = launcher.complete_args(["-m", "train", "-u", "care", "-d", "emotion_cafe", "-n", "x"])
    assert ours[ours.index("-c") + 1] == str(TASKS_DIR / "emotion_cafe" / "config.yaml")
    assert ours[-2:] == ["--device", "cpu"]
    stock = launcher.complete_args(["-m", "train", "-d", "emotion", "-n", "x"])
    assert stock[stock.index("-c") + 1] == str(fake_s3prl_tree / "downstream" / "emotion" / "config.yaml")
    # no config.yaml shipped: s3prl's own default stays (the user passes -c)
    assert "-c" not in launcher.complete_args(["-m", "train", "-d", "asr", "-n", "x"])


def test_launcher_leaves_explicit_flags_alone(monkeypatch):
    monkeypatch.setattr(launcher.torch.cuda, "is_available", lambda: False)
    argv = ["-m", "train", "-d", "emotion_cafe", "-c", "my.yaml", "--device", "cuda:1"]
    assert launcher.complete_args(argv) == argv
    resumed = launcher.complete_args(["-m", "train", "-e", "result/x", "-d", "emotion_cafe"])
    assert "-c" not in resumed  # s3prl takes the config from the checkpoint when resuming


@pytest.fixture()
def s3prl_checkout(tmp_path):
    """A copy of an s3prl source tree (the installed package is its `s3prl/` folder)."""
    import s3prl

    root = tmp_path / "s3prl-checkout"
    shutil.copytree(Path(s3prl.__file__).parent, root / "s3prl", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_register_checkout_writes_shims_once(s3prl_checkout):
    written = register_checkout(s3prl_checkout)
    pkg = find_package_dir(s3prl_checkout)
    assert pkg == s3prl_checkout / "s3prl"
    assert (pkg / "upstream" / "care" / "hubconf.py").is_file()
    assert (pkg / "downstream" / "emotion_cafe" / "config.yaml").read_text() == (
        TASKS_DIR / "emotion_cafe" / "config.yaml"
    ).read_text()
    hub_text = (pkg / "hub.py").read_text()
    assert hub_text.count(HUB_LINE) == 1
    assert pkg / "hub.py" in written
    again = register_checkout(s3prl_checkout)
    assert (pkg / "hub.py").read_text().count(HUB_LINE) == 1
    assert pkg / "hub.py" not in again


def test_registered_checkout_imports_care_from_its_own_hub(s3prl_checkout):
    register_checkout(s3prl_checkout)
    code = (
        "import s3prl, importlib; from s3prl import hub; "
        "assert s3prl.__file__.startswith(%r), s3prl.__file__; "
        "print(callable(hub.care), callable(hub.egemaps), callable(hub.wavlm_local), "
        "importlib.import_module('s3prl.downstream.emotion_cafe.expert').DownstreamExpert.__module__)"
    ) % str(s3prl_checkout)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=s3prl_checkout / "s3prl", capture_output=True, text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(s3prl_checkout)}, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "True", "True", "downstream_tasks.expert"]


def test_register_into_the_imported_tree_reports_success_with_device_hint(s3prl_checkout, capsys, monkeypatch):
    import s3prl

    from care_superb import checkout

    pkg = s3prl_checkout / "s3prl"
    monkeypatch.setattr(s3prl, "__file__", str(pkg / "__init__.py"))  # as after `pip install -e <checkout>`
    monkeypatch.setattr(checkout.torch.cuda, "is_available", lambda: False)
    checkout.main([str(s3prl_checkout), "--tasks", "emotion_cafe"])
    out = capsys.readouterr().out
    assert f"registered CARE and 1 tasks in {pkg}" in out
    assert out.strip().endswith("-n exp1 --device cpu")


def test_not_a_checkout_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an s3prl checkout"):
        register_checkout(tmp_path)


def test_registered_checkout_runs_its_own_runner_with_care(s3prl_checkout, tmp_path):
    """The SUPERB user's way: `cd <checkout>/s3prl && python run_downstream.py -u care ...` (no launcher)."""
    from fixtures_corpora import prepare_demo_cafe, save_tiny_care

    register_checkout(s3prl_checkout, tasks=["emotion_cafe"])
    prepare_demo_cafe(tmp_path / "raw", tmp_path / "manifest", seed=2)
    save_tiny_care(tmp_path / "care_tiny")
    expdir = tmp_path / "exp"
    overrides = ",,".join([
        "config.runner.total_steps=2", "config.runner.eval_step=2", "config.runner.save_step=2",
        "config.downstream_expert.datarc.num_workers=0", "config.downstream_expert.datarc.batch_size=8",
        f"config.downstream_expert.datarc.manifest_dir='{tmp_path / 'manifest'}'",
    ])
    env = {**__import__("os").environ, "PYTHONPATH": str(s3prl_checkout), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "run_downstream.py", "-m", "train", "-u", "care", "-k", str(tmp_path / "care_tiny"),
         "-d", "emotion_cafe", "-p", str(expdir), "--device", "cpu", "-o", overrides],
        cwd=s3prl_checkout / "s3prl", env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (expdir / "dev-best.ckpt").is_file()
    assert "dev" in __import__("json").loads((expdir / "results.json").read_text())
