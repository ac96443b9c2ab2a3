"""Hugging Face Hub: loading from a cache laid out as huggingface_hub writes it (offline), and
`care-superb push` up to the API call, through a recording stand-in for `HfApi`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from care_superb import EmotionClassifier
from care_superb import hub_push
from care_superb.export_classifier import main as export_main
from care_upstream import CARE
from care_upstream.hub import HubError, is_repo_id, resolve
from fixtures_share import demo_run

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT, refs=("main",)) -> Path:
    """`models--org--name/{blobs,refs,snapshots}` exactly as huggingface_hub lays out a download:
    content-addressed blobs, snapshot entries as relative symlinks into blobs, refs naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for f in sorted(folder.iterdir()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture(scope="module")
def care_run(demo_cafe, tmp_path_factory):
    return demo_run(demo_cafe, tmp_path_factory, "care")


def test_repo_ids_and_paths_are_told_apart(tmp_path):
    assert is_repo_id("org/name") and is_repo_id("org/name@v1.0") and is_repo_id("my-org/care_base.v2")
    assert not any(is_repo_id(x) for x in ("./org/name", "/abs/name", "~/x/y", "a/b/c", "name", "org/"))
    assert resolve(str(tmp_path)) == tmp_path  # an existing path is never looked up on the Hub


def test_care_from_pretrained_and_k_read_a_cached_hub_repo(demo_cafe, offline_cache):
    snap = cache_repo(offline_cache, "org/care-tiny", demo_cafe / "tiny_care", refs=("main", "v1"))
    assert resolve("org/care-tiny") == snap and resolve("org/care-tiny@v1") == snap
    assert resolve(f"org/care-tiny@{COMMIT}") == snap
    local = CARE.from_pretrained(demo_cafe / "tiny_care")
    for hub_model in (CARE.from_pretrained("org/care-tiny"), CARE.from_pretrained("org/care-tiny@v1")):
        assert all(torch.equal(a, b) for a, b in zip(local.state_dict().values(), hub_model.state_dict().values()))
    from care_upstream import hubconf

    expert = hubconf.care(ckpt="org/care-tiny")  # what `-k org/care-tiny` calls
    out = expert([torch.randn(16000)])
    assert len(out["hidden_states"]) == 13


def test_emotion_classifier_from_a_cached_hub_repo(care_run, tmp_path, offline_cache):
    folder = tmp_path / "clf"
    export_main([str(care_run.run), "--out", str(folder), "--include-upstream"])
    cache_repo(offline_cache, "org/cafe-care-tiny", folder)
    wav = sorted(care_run.audio.rglob("*.wav"))[0]
    assert EmotionClassifier.from_pretrained("org/cafe-care-tiny").predict(wav) == \
        EmotionClassifier.from_pretrained(folder).predict(wav)


def test_unknown_revision_of_a_cached_repo_is_one_sentence(demo_cafe, offline_cache):
    cache_repo(offline_cache, "org/care-tiny", demo_cafe / "tiny_care")
    with pytest.raises(HubError, match=r"org/care-tiny@v9 is not a local path and is not in the Hugging Face cache"):
        CARE.from_pretrained("org/care-tiny@v9")


class RecordingApi:
    """Stands in for `huggingface_hub.HfApi` at the one external boundary: records the calls."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def create_commit(self, **kwargs):
        self.calls.append(("create_commit", kwargs))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


def test_push_uploads_data_files_and_a_generated_card(care_run, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "clf"
    export_main([str(care_run.run), "--out", str(folder)])
    (folder / "notes.pt").write_bytes(b"pickles are never uploaded")
    api = RecordingApi()
    monkeypatch.setattr(hub_push, "make_api", lambda token=None: api)
    hub_push.main([str(folder), "org/cafe-care", "--private"])
    (name, create), (name2, commit) = api.calls
    assert name == "create_repo" and create == {"repo_id": "org/cafe-care", "private": True, "exist_ok": True,
                                                "repo_type": "model"}
    ops = {op.path_in_repo: op for op in commit["operations"]}
    assert name2 == "create_commit" and sorted(ops) == ["README.md", "config.json", "model.safetensors"]
    card = ops["README.md"].path_or_fileobj.decode()
    results = json.loads((care_run.run / "results.json").read_text())
    for needle in ("- s3prl\n", "- speech-emotion-recognition\n", "- care\n", "model-index:", "type: f1",
                   f"value: {results['test']['metrics']['weighted_f1']:.4f}", 'from_pretrained("org/cafe-care")'):
        assert needle in card, needle
    assert "not uploaded" in capsys.readouterr().err


def test_push_an_upstream_folder_with_run_metrics(care_run, tmp_path, monkeypatch):
    api = RecordingApi()
    monkeypatch.setattr(hub_push, "make_api", lambda token=None: api)
    hub_push.main([str(care_run.care), "org/care-tiny", "--results", str(care_run.run / "results.json")])
    ops = {op.path_in_repo: op for op in api.calls[1][1]["operations"]}
    assert sorted(ops) == ["README.md", "config.json", "model.safetensors"]
    card = ops["README.md"].path_or_fileobj.decode()
    assert "-u care -k org/care-tiny" in card and "emotion_cafe" in card and "type: f1" in card


def test_sweep_upstream_spec_reads_a_cached_hub_repo(demo_cafe, offline_cache):
    from sweep.cells import UpstreamSpec

    snap = cache_repo(offline_cache, "org/care-tiny", demo_cafe / "tiny_care")
    spec = UpstreamSpec.parse("hubcare=care:org/care-tiny")
    assert Path(spec.ckpt) == snap.resolve() and spec.label == "hubcare"
    assert spec.key == UpstreamSpec.parse(f"care:{demo_cafe / 'tiny_care'}").key  # same bytes, same cells
    with pytest.raises(ValueError, match="org/not-cached"):
        UpstreamSpec.parse("care:org/not-cached")
