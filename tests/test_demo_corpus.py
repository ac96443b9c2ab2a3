"""The synthetic CaFE-layout demo corpus: layout, determinism, transcripts, emotion-dependent prosody."""

import csv
import hashlib
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from downstream_tasks.corpora.cafe import parse_cafe
from downstream_tasks.demo_corpus import SENTENCES, DemoConfig, main, write_demo_corpus

SMALL = DemoConfig(sample_rate=16000, n_actors=12, n_sentences=1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    info = write_demo_corpus(out, seed=0, cfg=SMALL)
    return out, info


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.wav")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_parses_as_cafe(demo):
    out, info = demo
    assert info["n_files"] == 156
    utts = parse_cafe(out)
    assert len(utts) == 156
    assert Counter(u.speaker for u in utts) == {f"{a:02d}": 13 for a in range(1, 13)}
    assert Counter(u.label for u in utts)["neutral"] == 12
    angry = next(u for u in utts if u.id == "cafe-01-C-2-1")
    assert angry.path.relative_to(out).parts == ("CaFE_16k", "Colère", "Fort", "01-C-2-1.wav")
    neutral = next(u for u in utts if u.id == "cafe-01-N-1-1")
    assert neutral.path.relative_to(out).parts == ("CaFE_16k", "Neutre", "01-N-1-1.wav")


def test_full_inventory_size_without_writing():
    from downstream_tasks.demo_corpus import file_plan

    assert len(file_plan(DemoConfig())) == 936


def test_audio_format_and_durations(demo):
    out, _ = demo
    durations = []
    for p in (out / "CaFE_16k").rglob("*.wav"):
        info = sf.info(str(p))
        assert info.samplerate == 16000 and info.channels == 1
        durations.append(info.frames / info.samplerate)
    assert 0.8 < min(durations) and max(durations) < 2.5


def test_sentences_csv_names_every_file_with_its_text(demo):
    out, _ = demo
    with open(out / "sentences.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 156
    for r in rows:
        assert (out / r["file"]).is_file()
        assert r["text"] == SENTENCES[int(r["sentence"])][0]
        assert r["file"].endswith(f"-{r['sentence']}.wav")
    assert "synthetic" in (out / "README.txt").read_text().lower()


def test_transcripts_csv_is_what_care_pretrain_targets_reads(demo):
    """The demos hand `transcripts.csv` to `care-pretrain targets --transcripts`: every file gets its text."""
    from pretrain.targets.transcripts import TranscriptTable

    out, _ = demo
    table = TranscriptTable(out / "transcripts.csv")
    wavs = sorted(out.rglob("*.wav"))
    assert len(wavs) == 156
    for wav in wavs:
        assert table.lookup(wav.stem, str(wav)) in {text for text, *_ in SENTENCES.values()}


def test_deterministic_by_seed(tmp_path):
    cfg = DemoConfig(sample_rate=16000, n_actors=2, n_sentences=1)
    write_demo_corpus(tmp_path / "a", seed=3, cfg=cfg)
    write_demo_corpus(tmp_path / "b", seed=3, cfg=cfg)
    write_demo_corpus(tmp_path / "c", seed=4, cfg=cfg)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def _features(path):
    y, sr = sf.read(str(path), dtype="float32")
    spec = np.abs(np.fft.rfft(y)) ** 2  # power: an amplitude centroid is ruled by the noise floor
    centroid = (spec * np.fft.rfftfreq(len(y), 1 / sr)).sum() / spec.sum()
    rms = np.sqrt((y ** 2).mean())
    return [len(y) / sr, np.log(rms), centroid, np.log(np.abs(y).max() / rms)]


def test_prosody_depends_on_emotion(demo):
    out, _ = demo
    utts = parse_cafe(out)
    feats = {u.id: _features(u.path) for u in utts}
    for a in range(1, 13):
        anger, sad, fear = (feats[f"cafe-{a:02d}-{e}-2-1"] for e in "CTP")
        assert anger[1] > sad[1]      # louder
        assert anger[2] > sad[2]      # brighter
        assert sad[0] > fear[0]       # slower
    # a linear model on four crude features, trained on 8 actors, beats chance (1/7) on the other 4
    X = np.array([feats[u.id] for u in utts])
    y = np.array([u.label for u in utts])
    train = np.array([int(u.speaker) <= 8 for u in utts])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[train], y[train])
    assert (clf.predict(X[~train]) == y[~train]).mean() > 0.4


def test_cli_and_bad_options(tmp_path, capsys):
    info = main(["--out", str(tmp_path), "--sample-rate", "16000", "--actors", "1", "--sentences", "1"])
    assert info["n_files"] == 13 and "prepare" in capsys.readouterr().out
    with pytest.raises(ValueError, match="n_sentences must be 1-6"):
        write_demo_corpus(tmp_path / "x", cfg=DemoConfig(n_sentences=7))
