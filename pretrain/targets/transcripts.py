"""Transcripts for the semantic target: batched Whisper decoding, or a user CSV.

The paper takes transcripts from Whisper-large-v3 (it assumes no ground truth). Decoding is
batched (one `whisper.decode` call on a stack of 30 s log-mel segments) because one-by-one decoding
of 150 k utterances leaves a GPU mostly idle. Greedy decoding of a batch gives the same text as
decoding each segment alone: segments are padded to 30 s each anyway, and finished sequences only
receive end-of-text tokens.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from pretrain.targets.frames import SAMPLE_RATE


class TeacherUnavailableError(RuntimeError):
    """A teacher model or its package cannot be loaded here; the message says what to install or pass."""


class TranscriptTable:
    """``path_or_id,text`` rows. A row matches an utterance by id, by the path as written, or by absolute path."""

    HEADERS = {("path_or_id", "text"), ("id", "text"), ("path", "text")}

    def __init__(self, csv_path: Path | str, encoding: str = "utf-8"):
        self.csv_path = Path(csv_path)
        self.encoding = encoding
        self.rows: Dict[str, str] = {}
        try:
            import codecs

            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"--transcripts-encoding {encoding!r}: unknown text encoding") from None
        try:
            self._read()
        except UnicodeDecodeError:
            raw = self.csv_path.read_bytes()
            try:  # the reader's error counts from its buffer, not the file: find the line from the bytes
                raw.decode(encoding)
                where = ""
            except UnicodeDecodeError as err:
                line = raw[: err.start].count(b"\n") + 1
                where = f" at line {line} (byte {raw[err.start:err.start + 1]!r})"
            raise ValueError(
                f"{self.csv_path}: transcript CSV is not valid {encoding}{where}; save it as UTF-8 or name its "
                f"encoding with --transcripts-encoding (e.g. latin-1)"
            ) from None
        except OSError as err:
            raise ValueError(f"{self.csv_path}: cannot read transcript CSV ({err})") from None
        if not self.rows:
            raise ValueError(f"{self.csv_path}: no transcripts")

    def _read(self) -> None:
        with open(self.csv_path, newline="", encoding=self.encoding) as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if n == 1 and tuple(c.strip().lower() for c in row) in self.HEADERS:
                    continue
                if len(row) != 2:
                    raise ValueError(f"{self.csv_path}: line {n} has {len(row)} fields, expected path_or_id,text")
                key, text = row[0].strip(), row[1].strip()
                if key in self.rows and self.rows[key] != text:
                    raise ValueError(f"{self.csv_path}: line {n}: {key!r} listed twice with different text")
                self.rows[key] = text
                if not Path(key).is_absolute() and Path(key).suffix:
                    # a relative path is relative to the CSV's folder
                    self.rows.setdefault(os.path.abspath(self.csv_path.parent / key), text)

    def lookup(self, utt_id: str, path: str) -> Optional[str]:
        for key in (utt_id, path, os.path.abspath(path)):
            if key in self.rows:
                return self.rows[key]
        return None

    def fingerprint(self) -> str:
        import hashlib

        digest = hashlib.sha256(self.csv_path.read_bytes()).hexdigest()[:16]
        return digest if self.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else f"{digest}:{self.encoding}"


@dataclass(frozen=True)
class WhisperSettings:
    """Decoding choices. Greedy (temperature 0, no beam) keeps batches equal to one-by-one decoding."""

    model: str = "large-v3"
    language: Optional[str] = "en"
    batch_size: int = 16
    beam_size: Optional[int] = None
    sample_len: Optional[int] = None  # max tokens per segment; None = whisper's default (n_text_ctx // 2)


class WhisperTranscriber:
    """Batched Whisper transcription of 16 kHz waveforms (each cut or padded to Whisper's 30 s window)."""

    def __init__(self, settings: WhisperSettings = WhisperSettings(), device: str = "cpu", model=None):
        try:
            import whisper
        except ImportError as err:
            raise TeacherUnavailableError(
                "Whisper transcripts need `openai-whisper` (pip install openai-whisper==20250625), "
                "or pass --transcripts CSV"
            ) from err
        if whisper.audio.SAMPLE_RATE != SAMPLE_RATE:
            raise TeacherUnavailableError(f"whisper expects {whisper.audio.SAMPLE_RATE} Hz, targets use {SAMPLE_RATE} Hz")
        self.whisper = whisper
        self.settings = settings
        self.device = device
        if model is None:
            model = self._load(settings.model, device)
        self.model = model.to(device).eval()
        self.truncated = 0  # utterances longer than 30 s: only their first 30 s are transcribed

    @staticmethod
    def _load(name: str, device: str):
        import whisper

        if name not in whisper.available_models() and not Path(name).is_file():
            raise ValueError(f"whisper model {name!r}: neither a known name ({', '.join(whisper.available_models())}) nor a file")
        try:
            return whisper.load_model(name, device=device)
        except Exception as err:  # no network, truncated download, ...
            raise TeacherUnavailableError(
                f"cannot load whisper model {name!r} ({type(err).__name__}: {err}); without network, put the "
                f"checkpoint into ~/.cache/whisper/ or pass its .pt path to --whisper-model, or pass --transcripts CSV"
            ) from err

    def _options(self):
        s = self.settings
        return self.whisper.DecodingOptions(
            task="transcribe", language=s.language, temperature=0.0, beam_size=s.beam_size,
            sample_len=s.sample_len, without_timestamps=True, fp16=self.device.startswith("cuda"),
        )

    def mel_batch(self, wavs: Sequence[np.ndarray]):
        """Stack of log-mel segments (B, n_mels, 3000) on the model's device."""
        import torch

        w = self.whisper
        mels = []
        for wav in wavs:
            if len(wav) > w.audio.N_SAMPLES:
                self.truncated += 1
            audio = w.pad_or_trim(torch.from_numpy(np.asarray(wav, dtype=np.float32)))
            mels.append(w.log_mel_spectrogram(audio, n_mels=self.model.dims.n_mels))
        return torch.stack(mels).to(self.device)

    def transcribe(self, wavs: Sequence[np.ndarray]) -> List[str]:
        """Texts for ``wavs`` (16 kHz), decoded ``batch_size`` segments per `whisper.decode` call."""
        import torch

        texts: List[str] = []
        bs = max(1, int(self.settings.batch_size))
        with torch.inference_mode():
            for start in range(0, len(wavs), bs):
                results = self.whisper.decode(self.model, self.mel_batch(wavs[start : start + bs]), self._options())
                texts.extend(r.text.strip() for r in results)
        return texts
