"""Builders of tiny fake corpus trees with the real naming, for parser and protocol tests.

Each `make_<corpus>(root)` writes a tree under `root` in the layout the corpus ships in and returns
the ground truth it wrote (ids, speakers, labels) spelled out independently of the parser, so tests
compare the parser against facts, not against itself. Audio is short 16 kHz tones written with
soundfile; MELD clips are real mp4/AAC (6-channel and stereo) encoded with PyAV.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf

SR = 16000


def write_tone(path: Path, seconds: float = 0.2, freq: float = 220.0, sr: int = SR, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    x = (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    sf.write(str(path), x, sr, subtype="PCM_16")
    return path


def write_ramp(path: Path, seconds: float, sr: int = SR) -> Path:
    """Sample i holds the value i / 2**15 (mod 1) so a test can tell which samples a reader returned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * sr))
    x = (np.arange(n) % 32768).astype(np.int16)
    sf.write(str(path), x, sr, subtype="PCM_16")
    return path


# ----------------------------------------------------------------------------------- IEMOCAP
# (dialog, [(last id field, code)]): covers impro05a, script01_1b, FXX0 and the M utterance of an F dialog.
IEMOCAP_DIALOGS = (
    ("F_impro01", [("F000", "neu"), ("M003", "ang"), ("F001", "exc"), ("M004", "xxx")]),
    ("M_impro05a", [("M000", "hap"), ("F000", "sad"), ("M001", "fru")]),
    ("F_script01_1b", [("F000", "sur"), ("M000", "neu"), ("FXX0", "fea"), ("M001", "dis")]),
    ("M_script02_2", [("M000", "oth"), ("F000", "ang"), ("M001", "exc")]),
)


def _iemocap_block(start: float, utt: str, code: str) -> str:
    return (f"[{start:.4f} - {start + 1.5:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 2.0000]\n"
            f"C-E2:\tNeutral;\t()\nC-E3:\tAnger;\t(some comment, with a comma)\n"
            f"A-E3:\tval 3; act 2; dom  2;\t()\n\n")


def make_iemocap(root: Path, sessions: Sequence[int] = (1, 2, 3, 4, 5),
                 missing_wav: Optional[str] = None) -> List[Dict]:
    """`root/IEMOCAP_full_release/Session<n>/...`; returns [{id, speaker, code, session, dialog}].

    Per-rater subfolders hold decoy label files with codes the parser must never see; `._` copies
    mimic macOS. `missing_wav` names an utterance whose wav is not written.
    """
    base = root / "IEMOCAP_full_release"
    truth = []
    for s in sessions:
        sdir = base / f"Session{s}"
        label_dir = sdir / "dialog" / "EmoEvaluation"
        label_dir.mkdir(parents=True, exist_ok=True)
        for suffix, utts in IEMOCAP_DIALOGS:
            dialog = f"Ses0{s}{suffix}"
            text = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
            for i, (last, code) in enumerate(utts):
                utt = f"{dialog}_{last}"
                text += _iemocap_block(1.0 + 2 * i, utt, code)
                truth.append(dict(id=utt, speaker=f"Ses0{s}{last[0]}", code=code, session=s, dialog=dialog))
                if utt != missing_wav:
                    write_tone(sdir / "sentences" / "wav" / dialog / f"{utt}.wav", freq=200 + 10 * i)
            (label_dir / f"{dialog}.txt").write_text(text)
            (label_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
            for sub in ("Categorical", "Attribute", "Self-evaluation"):
                (label_dir / sub).mkdir(exist_ok=True)
                (label_dir / sub / f"{dialog}_e1_cat.txt").write_text(
                    f"[1.0 - 2.0]\t{dialog}_F000\tbogus_code\t[1, 1, 1]\n")
    return truth


# -------------------------------------------------------------------------------------- MELD
MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
               "Season", "Episode", "StartTime", "EndTime"]
# (split, dialogue, utterance, speaker, emotion, sentiment, text)
MELD_ROWS = (
    ("train", 0, 0, "Chandler", "neutral", "neutral", "also I was the point person on my company\u2019s transition"),
    ("train", 0, 1, "The Interviewer", "neutral", "neutral", "You must\u2019ve had your hands full."),
    ("train", 0, 2, "Chandler", "surprise", "positive", 'That I did. That I did, "really".'),
    ("train", 1, 0, "Monica", "joy", "positive", "Oh, yeah, \u2026 right!\nOn two lines."),
    ("train", 125, 3, "Ross", "neutral", "neutral", "corrupt clip in the real release"),
    ("train", 2, 0, "Rachel", "anger", "negative", "No, no, no!"),
    ("dev", 0, 0, "Phoebe", "sadness", "negative", "Oh, okay."),
    ("dev", 110, 7, "Joey", "neutral", "neutral", "clip missing in the real release"),
    ("dev", 1, 0, "Joey", "disgust", "negative", "Ew, gross."),
    ("test", 0, 0, "Ross", "fear", "negative", "What, what is it?"),
    ("test", 0, 1, "Rachel", "joy", "positive", "Yes, \"Ross\", yes!"),
)
MELD_CLIP_DIRS = {"train": "train/train_splits", "dev": "dev/dev_splits_complete",
                  "test": "test/output_repeated_splits_test"}


def make_mp4(path: Path, seconds: float = 0.3, channels: int = 6, sr: int = 48000, freq: float = 440.0) -> Path:
    """A real AAC-in-mp4 clip encoded with PyAV, like MELD's clips (6-channel 5.1 or stereo, 48 kHz)."""
    import av

    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    t = np.arange(int(round(seconds * sr))) / sr
    x = np.repeat((0.3 * np.sin(2 * np.pi * freq * t))[None, :], channels, axis=0).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sr, layout=layout)
        for start in range(0, x.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, start:start + 1024]), format="fltp",
                                               layout=layout)
            frame.sample_rate, frame.pts = sr, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def make_meld(root: Path) -> List[Dict]:
    """`root/MELD.Raw/` with the three CSVs (train's inside `train/`) and the three clip folders.

    Returns the labelled rows that should survive parsing: [{id, split, speaker, emotion, text}].
    Clips are real AAC in mp4: 6-channel in train, stereo in dev and test (MELD has both). Train
    dia125_utt3 gets a corrupt clip and dev dia110_utt7 none, as in the release; dev dia66_utt9 and
    a `final_videos_test…` clip are unlabelled extras.
    """
    base = root / "MELD.Raw"
    templates = {6: make_mp4(base / ".template6.mp4", channels=6), 2: make_mp4(base / ".template2.mp4", channels=2)}
    csv_at = {"train": base / "train" / "train_sent_emo.csv", "dev": base / "dev_sent_emo.csv",
              "test": base / "test_sent_emo.csv"}
    lines: Dict[str, List[str]] = {s: [",".join(MELD_HEADER)] for s in csv_at}
    truth = []

    def q(cell: str) -> str:
        return '"' + cell.replace('"', '""') + '"'

    for n, (split, dia, utt, speaker, emotion, sentiment, text) in enumerate(MELD_ROWS, 1):
        lines[split].append(",".join([str(n), q(text), q(speaker), emotion, sentiment, str(dia), str(utt), "3",
                                      "19", q("00:14:38,127"), q("00:14:40,378")]))
        name = f"dia{dia}_utt{utt}"
        clip = base / MELD_CLIP_DIRS[split] / f"{name}.mp4"
        clip.parent.mkdir(parents=True, exist_ok=True)
        if (split, name) == ("dev", "dia110_utt7"):
            continue
        if (split, name) == ("train", "dia125_utt3"):
            clip.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
            continue
        shutil.copy(templates[6 if split == "train" else 2], clip)
        truth.append(dict(id=f"meld-{split}-{name}", split=split, speaker=speaker, emotion=emotion, text=text))
    for split, path in csv_at.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(("\r\n".join(lines[split]) + "\r\n").encode("utf-8"))
    for extra in (base / MELD_CLIP_DIRS["dev"] / "dia66_utt9.mp4",
                  base / MELD_CLIP_DIRS["test"] / "final_videos_testdia0_utt0.mp4"):
        shutil.copy(templates[2], extra)
    for template in templates.values():
        template.unlink()
    # Unzipped on a Mac: resource-fork shadows of a clip folder and a CSV (parsers must ignore them).
    shadow = base / "__MACOSX" / MELD_CLIP_DIRS["train"]
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "._dia0_utt0.mp4").write_bytes(b"\x00\x05\x16\x07")
    (base / "__MACOSX" / "._dev_sent_emo.csv").write_bytes(b"\x00\x05\x16\x07")
    return truth


# ---------------------------------------------------------------------------------- CMU-MOSI
# (video, segment, score): ids with leading `_`, double `_`, `-`; a 0.0 score is positive.
MOSI_ROWS = (
    ("I5y0__X72p0", 1, 1.2), ("I5y0__X72p0", 2, -0.4), ("I5y0__X72p0", 12, 0.0),
    ("6_0THN4chvY", 1, -3.0), ("2iD-tVS8NPw", 3, 2.6),
    ("_dI--eQ6qVU", 1, 3.0), ("_dI--eQ6qVU", 2, -1.8),
    ("zhpQhgha_KU", 1, -0.2), ("zhpQhgha_KU", 4, 0.6), ("tmZoasNr4rU", 1, -2.0),
)


def make_mosi(root: Path, missing_wav: Optional[str] = None) -> List[Dict]:
    """`root/Raw/{Audio/WAV_16000/Segmented,Labels,Transcript/Segmented}`; returns [{id, video, score}]."""
    base = root / "Raw"
    seg = base / "Audio" / "WAV_16000" / "Segmented"
    lines, truth = [], []
    for i, (vid, k, score) in enumerate(MOSI_ROWS):
        lines.append(f"{10.0 * k:.2f},{10.0 * k + 3.5:.2f},{vid},{k},{score}")
        key = f"{vid}_{k}"
        if key != missing_wav:
            write_tone(seg / f"{key}.wav", freq=150 + 20 * i)
            truth.append(dict(id=f"mosi-{key}", video=vid, segment=k, score=score))
    write_tone(seg / "I5y0__X72p0_99.wav")  # no label row: ignored
    shadow = root / "__MACOSX" / "Raw" / "Audio" / "WAV_16000" / "Segmented"
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "._I5y0__X72p0_1.wav").write_bytes(b"\x00\x05\x16\x07")
    (base / "Labels").mkdir(parents=True, exist_ok=True)
    (base / "Labels" / "OpinionLevelSentiment.csv").write_text("\n".join(lines) + "\n")
    (base / "Transcript" / "Segmented").mkdir(parents=True, exist_ok=True)
    (base / "Transcript" / "Segmented" / "I5y0__X72p0.annotprocessed").write_text("1_DELIM_hello there\n")
    return truth


# ---------------------------------------------------------------------------------- DAIC-WOZ
DAIC_IDS = tuple(i for i in range(300, 493) if i not in (342, 394, 398, 460))
DAIC_SPLIT_HEADER = ("Participant_ID,PHQ8_Binary,PHQ8_Score,Gender,PHQ8_NoInterest,PHQ8_Depressed,PHQ8_Sleep,"
                     "PHQ8_Tired,PHQ8_Appetite,PHQ8_Failure,PHQ8_Concentrating,PHQ8_Moving")
# Fake interview timeline (seconds): participant chatter before Ellie, Ellie's first line, two participant
# turns (disjoint: the concatenation has 5.8 + 6.3 = 12.1 s of speech), a sync marker row.
DAIC_AUDIO_SECONDS = 14.0
DAIC_ROWS = ((0.0, 0.4, "Participant", "is it on"), (0.5, 1.0, "Ellie", "hi i'm ellie thanks for coming in"),
             (1.2, 7.0, "Participant", "fine thanks"), (7.0, 7.4, "Ellie", "mhm"),
             (7.4, 7.45, "Participant", "<sync>"), (7.5, 13.8, "Participant", "i'm from LA"))
DAIC_SPEECH = ((1.2, 7.0), (7.5, 13.8))
# Transcripts that run early against their audio (four real interviews): written shifted, the parser must undo it.
DAIC_OFFSETS = {318: 34.319917, 321: 3.8379167, 341: 6.1892, 362: 16.8582}


def write_daic_transcript(path: Path, rows, offset: float = 0.0) -> Path:
    """TAB-separated transcript; `offset` is subtracted from every time (a misaligned transcript)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "start_time\tstop_time\tspeaker\tvalue\n"
    text += "".join(f"{s - offset:.3f}\t{e - offset:.3f}\t{spk}\t{val}\n" for s, e, spk, val in rows)
    path.write_text(text)
    return path


def make_daicwoz(root: Path, n_train: int = 107, n_train_dep: int = 30, n_dev: int = 35, n_dev_dep: int = 12,
                 offsets: Optional[Dict[int, float]] = None, no_ellie: Sequence[int] = (),
                 skip_audio: Sequence[int] = ()) -> Dict[str, Dict[int, int]]:
    """AVEC 2017 split files plus `<pid>_P/` folders; returns {split: {pid: PHQ8_Binary}}.

    Train takes the first `n_train` real ids, dev the next `n_dev`; the first `*_dep` of each are
    depressed. `offsets` writes those participants' transcripts shifted early by that many seconds
    (default: the real four, `DAIC_OFFSETS`); `no_ellie` writes transcripts without Ellie rows.
    """
    offsets = DAIC_OFFSETS if offsets is None else offsets
    pids = DAIC_IDS[: n_train + n_dev]
    labels = {"train": {p: int(i < n_train_dep) for i, p in enumerate(pids[:n_train])},
              "dev": {p: int(i < n_dev_dep) for i, p in enumerate(pids[n_train:])}}
    # A quiet noise floor: every 10 s window holds audio that passes the "not silent" rule.
    audio = np.random.default_rng(0).integers(-300, 300, int(DAIC_AUDIO_SECONDS * SR)).astype(np.int16)
    for split, table in labels.items():
        lines = [DAIC_SPLIT_HEADER]
        for pid, binary in table.items():
            score = 10 + pid % 10 if binary else pid % 10
            items = ",".join("" if (pid + j) % 7 == 0 else str((pid + j) % 4) for j in range(8))
            lines.append(f"{pid},{binary},{score},{pid % 2},{items}")
            folder = root / f"{pid}_P"
            folder.mkdir(parents=True, exist_ok=True)
            if pid not in skip_audio:
                sf.write(str(folder / f"{pid}_AUDIO.wav"), audio, SR, subtype="PCM_16")
            rows = [r for r in DAIC_ROWS if not (pid in no_ellie and r[2] == "Ellie")]
            write_daic_transcript(folder / f"{pid}_TRANSCRIPT.csv", rows, offsets.get(pid, 0.0))
        (root / f"{split}_split_Depression_AVEC2017.csv").write_text("\n".join(lines) + "\n")
    (root / "test_split_Depression_AVEC2017.csv").write_text("participant_ID,Gender\n300,1\n")
    return labels


# -------------------------------------------------------------------------------- MSP-IMPROV
MSP_SPEAKERS = tuple(f"{sex}{s:02d}" for sex in "FM" for s in range(1, 7))
# (sentence+emotion, recording type, consensus) per speaker; the partner's turn code is e.g. FM01.
MSP_TURNS = (("01A", "S", "A"), ("02H", "T", "H"), ("03N", "R", "N"), ("04S", "P", "X"))


def msp_name(sentence: str, speaker: str, rec: str) -> str:
    turn = ("FM" if speaker[0] == "F" else "MF") + speaker[1:]
    return f"MSP-IMPROV-S{sentence}-{speaker}-{rec}-{turn}"


def make_mspimprov(root: Path, label_name: str = "Evaluation.txt", audio_dir: str = "Audio",
                   nan_for: Sequence[str] = ()) -> Dict[str, Dict]:
    """`root/Evaluation.txt` plus `root/Audio/session<n>/S<nn><E>/<R|S|T|P>/*.wav` for all 12 speakers.

    Returns {name: {speaker, valence, arousal, dominance}} for every block written; names in
    `nan_for` get `NaN` valence. Value order and spacing vary between blocks, as in public copies.
    """
    blocks, truth = [], {}
    for si, speaker in enumerate(MSP_SPEAKERS):
        session = int(speaker[1:])
        for ti, (sent, rec, consensus) in enumerate(MSP_TURNS):
            name = msp_name(sent, speaker, rec)
            v, a, d = 1.0 + (si % 5) * 0.5, 2.0 + ti * 0.5, 3.0 + (si + ti) % 3 * 0.25
            v_text = "NaN" if name in nan_for else f"{v:.6f}"
            if ti % 2 == 0:
                values = f"A:{a:.6f}; V:{v_text}; D:{d:.6f} ; N:3.000000;"
            else:
                values = f"V:{v_text} ; D:{d:.6f};A:{a:.6f};"  # other order, no N:, odd spacing
            utd = name.replace("MSP-IMPROV-", "UTD-IMPROV-")
            blocks.append(f"{utd}.avi; {consensus}; {values}\n"
                          f"rater01; Angry; Frustrated; A:2.0; V:2.0; D:3.0; N:2.0\n"
                          f"rater02; Neutral; ; A:3.0; V:3.0; D:3.0; N:4.0\n")
            truth[name] = dict(speaker=speaker, valence=v, arousal=a, dominance=d, session=session, recording=rec)
            write_tone(root / audio_dir / f"session{session}" / f"S{sent}" / rec / f"{name}.wav", freq=100 + 7 * si)
    (root / label_name).write_text("\n".join(blocks))
    return truth


# ---------------------------------------------------------------------- demo corpus + tiny CARE
def prepare_demo_cafe(raw: Path, out: Path, seed: int = 0, n_actors: int = 12) -> Path:
    """A small synthetic corpus in CaFE's layout (16 kHz, one sentence per actor × emotion × intensity)
    written to `raw` and prepared as emotion_cafe into `out`; returns `out` (the manifest folder)."""
    from downstream_tasks.demo_corpus import DemoConfig, write_demo_corpus
    from downstream_tasks.prepare import prepare_task

    write_demo_corpus(raw, seed=seed, cfg=DemoConfig(sample_rate=16000, n_actors=n_actors, n_sentences=1))
    prepare_task("emotion_cafe", raw, out, progress=False, verbose=False)
    return out


def save_tiny_care(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny CARE upstream folder (config.json + model.safetensors)."""
    import torch

    from care_upstream import CARE, CareConfig

    torch.manual_seed(seed)
    CARE(CareConfig.tiny()).save_pretrained(folder)
    return folder
