"""``care-pretrain export``: trainer checkpoint -> CARE upstream folder, and back."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pretrain.train import CKPT_BEST, CKPT_LAST, CheckpointError
from test_train import make_cache, run_inprocess, tiny_args


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exp")
    cache = make_cache(root / "data", n_utts=10)
    out = root / "run"
    # lr high enough that the exported weights differ clearly from any fresh init
    run_inprocess(tiny_args(cache, out, max_steps=4, eval_interval=2, ckpt_interval=2, lr=1e-2))
    return out


def test_export_round_trip_gives_the_checkpoint_model(run_dir, tmp_path, capsys):
    from care_upstream.model import CARE
    from pretrain.cli import main as cli_main
    from pretrain.export import max_output_difference, model_from_checkpoint

    out = tmp_path / "care_export"
    assert cli_main(["export", str(run_dir), "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    best = torch.load(run_dir / CKPT_BEST, weights_only=True)
    assert info["step"] == best["step"] and info["max_output_difference"] == 0.0

    exported = CARE.from_pretrained(out)
    for k, v in best["model"].items():
        assert torch.equal(exported.state_dict()[k], v), k
    trained, _ = model_from_checkpoint(run_dir / CKPT_BEST)
    assert max_output_difference(trained, exported) == 0.0
    # the heads are sized for the target cache the run used
    assert (exported.config.semantic_target_dim, exported.config.acoustic_target_dim) == (6, 5)
    # and training did change the weights relative to a fresh model of the same seed
    torch.manual_seed(3)
    fresh = CARE(exported.config).eval()
    assert max_output_difference(fresh, exported) > 0


def test_export_last_and_file_arguments(run_dir, tmp_path):
    from pretrain.export import export

    info = export(run_dir, tmp_path / "last", which="last")
    assert info["step"] == 4
    info = export(run_dir / CKPT_LAST, tmp_path / "file")
    assert info["checkpoint"].endswith(CKPT_LAST)


def test_export_errors_name_the_problem(run_dir, tmp_path, capsys):
    from pretrain.export import export, main

    with pytest.raises(CheckpointError, match="no such run folder"):
        export(tmp_path / "nope", tmp_path / "o")
    only_last = tmp_path / "only_last"
    only_last.mkdir()
    shutil.copy(run_dir / CKPT_LAST, only_last / CKPT_LAST)
    with pytest.raises(CheckpointError, match=r"ckpt_best.pt: not found.*--checkpoint last"):
        export(only_last, tmp_path / "o")
    # a pickled module (the authors' torch.save(model) style) is refused, not unpickled
    pickled = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    assert main([str(pickled), "--out", str(tmp_path / "o")]) == 2
    assert "pickled.pt: not a readable trainer checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
