"""`care-superb extract`: layers and pooling, the weighted layers of a run equal what its probe pools,
one array + index, and resuming after a kill without redoing or damaging finished files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import faults
from care_superb import extract
from care_superb.classifier import EmotionClassifier
from fixtures_share import demo_run


@pytest.fixture(scope="module")
def care_run(demo_cafe, tmp_path_factory):
    return demo_run(demo_cafe, tmp_path_factory, "care")


@pytest.fixture
def audio(tmp_path):
    """Three files in two folders, 0.5-2.5 s (one shorter than the 1 s pad), 16 and 22.05 kHz."""
    return [faults.good_wav(tmp_path / "in" / "a" / "x.wav", seconds=2.5),
            faults.good_wav(tmp_path / "in" / "b" / "x.wav", seconds=0.5, seed=1),
            faults.good_wav(tmp_path / "in" / "b" / "y.wav", seconds=1.3, sr=22050, seed=2)]


def test_layers_and_pooling_per_file(care_run, audio, tmp_path):
    spec = f"care:{care_run.care}"
    extract.main([str(tmp_path / "in"), "--upstream", spec, "--out", str(tmp_path / "all"), "--no-progress"])
    got = sorted(p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all").rglob("*.safetensors"))
    assert got == ["a/x.wav.safetensors", "b/x.wav.safetensors", "b/y.wav.safetensors"]  # folders mirrored
    every = load_file(str(tmp_path / "all" / "a" / "x.wav.safetensors"))["embedding"]
    assert every.shape == (13, 64)
    with safe_open(str(tmp_path / "all" / "a" / "x.wav.safetensors"), "pt") as f:
        assert f.metadata()["source"] == str(audio[0]) and f.metadata()["layers"] == "all"
    extract.main([str(audio[0]), "--upstream", spec, "--out", str(tmp_path / "k"), "--layers", "4", "--pool", "none",
                  "--format", "npy", "--no-progress"])
    frames = np.load(tmp_path / "k" / "x.wav.npy")
    from care_upstream import hubconf

    with torch.no_grad():  # s3prl's Featurizer keeps min(T, round(samples / 320)) frames
        n_model = hubconf.care(ckpt=str(care_run.care))([torch.zeros(40000)])["hidden_states"][0].shape[1]
    assert frames.shape == (min(n_model, round(2.5 * 16000 / 320)), 64)
    np.testing.assert_allclose(frames.mean(axis=0), every[4].numpy(), rtol=1e-5, atol=1e-6)


def test_weighted_layers_of_a_run_are_what_its_probe_pools(care_run, audio, tmp_path):
    out = tmp_path / "w"
    extract.main([str(tmp_path / "in"), "--upstream", f"care:{care_run.care}", "--out", str(out),
                  "--layers", f"weighted:{care_run.run}", "--single-file", "--no-progress"])
    index = list(csv.DictReader(open(out / "index.csv")))
    assert [r["path"] for r in index] == [str(p) for p in audio]
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == (3, 64)
    clf = EmotionClassifier.from_pretrained(care_run.run)
    for row, path in zip(emb, audio):
        wav = clf.load_audio(path)
        with torch.no_grad():
            pooled = clf.featurizer([wav], clf.upstream([wav]))[0].mean(dim=0)
        np.testing.assert_allclose(row, pooled.numpy(), rtol=1e-5, atol=1e-6)
    settings = json.loads((out / "extract.json").read_text())
    assert len(settings["layer_settings"]["layer_weights"]) == 13


def test_resume_after_a_kill_keeps_finished_files(care_run, audio, tmp_path, monkeypatch):
    out = tmp_path / "r"
    argv = [str(tmp_path / "in"), "--upstream", f"care:{care_run.care}", "--out", str(out), "--no-progress"]
    real_save, saved = extract._save, []

    def save_then_die(path, *args):
        if len(saved) == 2:
            raise KeyboardInterrupt  # killed while working on the third file
        real_save(path, *args)
        saved.append(path)

    monkeypatch.setattr(extract, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        extract.main(argv)
    monkeypatch.setattr(extract, "_save", real_save)
    before = {p: p.stat().st_mtime_ns for p in saved}
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["extract.json", "x.wav.safetensors",
                                                                      "x.wav.safetensors"]
    written, already, skipped = extract.run_extract(extract.ExtractConfig(
        upstream=f"care:{care_run.care}", audio=[tmp_path / "in"], out=out, progress=False))
    assert (written, already, skipped) == (1, 2, 0)
    assert {p: p.stat().st_mtime_ns for p in saved} == before
    with pytest.raises(SystemExit):  # other settings on the same folder are refused, not mixed in
        extract.main(argv + ["--layers", "3"])


def test_egemaps_has_one_layer_of_25_descriptors(audio, tmp_path):
    extract.main([str(audio[0]), "--upstream", "egemaps", "--out", str(tmp_path / "e"), "--no-progress"])
    assert load_file(str(tmp_path / "e" / "x.wav.safetensors"))["embedding"].shape == (1, 25)
    extract.main([str(audio[0]), "--upstream", "egemaps", "--out", str(tmp_path / "f"), "--layers", "0",
                  "--pool", "none", "--no-progress"])
    assert load_file(str(tmp_path / "f" / "x.wav.safetensors"))["embedding"].shape == (round(2.5 * 16000 / 160), 25)
