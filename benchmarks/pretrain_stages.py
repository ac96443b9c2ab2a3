"""Per-stage rates of CARE pre-training's target extraction, for the README's "Scaling out" plan.

    python benchmarks/pretrain_stages.py --stages egemaps pase text --device cpu --threads 1
    python benchmarks/pretrain_stages.py --stages whisper --device cuda --whisper-batch 16

Each stage runs the project's own extractor class where one exists (``EgemapsExtractor``,
``PasePlusExtractor``, ``TextEncoder``) on random weights of the paper's teacher sizes, so no
download is needed: compute time does not depend on the weights' values. Whisper large-v3 is
built from its published dimensions and timed as ``whisper.decode`` spends its time: one encoder
pass over a 30 s window per utterance (Whisper pads every clip to 30 s, so its cost follows the
utterance count, not the hours) plus one cached decoder step per output token. The token count is
an assumption (``--tokens``; English at ~2.5 words/s gives ~20 tokens for a 5.5 s clip), so the
per-token time is printed too. Training throughput is ``benchmarks/pretrain_throughput.py``.

Clips are ``--seconds`` long (5.55 s: MSP-PODCAST's 230 h over 149,307 utterances). Each stage
keeps the best of ``--rounds`` rounds, which is robust to other jobs on a shared machine.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

WHISPER_LARGE_V3 = dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
                        n_vocab=51866, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=32)
"""``whisper.load_model("large-v3").dims``."""
SENTENCE = "so I think what really matters here is how people actually feel when they talk about it"
"""15 words, the length of a ~5.5 s podcast utterance at 2.5 words/s."""


CPU_RATES: dict = {}
"""Per stage, units per second of this process's CPU time (the best round): on a shared machine
with ``--threads 1`` that is units per core-second, unlike the wall-clock rate other jobs slow down."""


def best_rate(fn, units: float, rounds: int, sync, key: str = "") -> float:
    """Largest units/s of wall time over ``rounds`` timed calls of ``fn`` (one untimed warm-up call
    first); the best units per CPU-second goes to ``CPU_RATES[key]``."""
    fn()
    sync()
    best = best_cpu = 0.0
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        best = max(best, units / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, units / max(time.process_time() - c0, 1e-9))
    CPU_RATES[key] = best_cpu
    return best


def stage_egemaps(args, wav, sync):
    from pretrain.targets.acoustic import EgemapsExtractor

    ex = EgemapsExtractor()
    return best_rate(lambda: ex.frames_100hz(wav), 1, args.rounds, sync, "egemaps"), "utterances/s"


def stage_pase(args, wav, sync):
    from pretrain.targets.acoustic import PasePlusExtractor
    from pretrain.targets.pase_plus import PasePlusEncoder

    torch.manual_seed(0)
    ex = PasePlusExtractor(frontend=PasePlusEncoder(), device=args.device)
    return best_rate(lambda: ex.frames_100hz(wav), 1, args.rounds, sync, "pase"), "utterances/s"


def stage_text(args, wav, sync):
    """A RoBERTa-base-sized encoder (12 x 768, random) behind the offline MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pretrain.targets.text import TextEncoder, TextEncoderSettings, minilm_folder

    folder = Path(tempfile.mkdtemp()) / "base_sized"
    AutoTokenizer.from_pretrained(str(minilm_folder())).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                         max_position_embeddings=514)).save_pretrained(folder)
    enc = TextEncoder(TextEncoderSettings(name=str(folder), batch_size=args.text_batch), device=args.device)
    texts = [SENTENCE] * args.text_batch
    return best_rate(lambda: enc.encode(texts), len(texts), args.rounds, sync, "text"), "utterances/s"


def stage_whisper(args, wav, sync):
    import whisper
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    model = Whisper(ModelDimensions(**WHISPER_LARGE_V3)).to(args.device).eval()
    half = args.device.startswith("cuda")
    if half:
        model = model.half()
    b = args.whisper_batch
    audio = whisper.pad_or_trim(torch.from_numpy(wav))
    mel = whisper.log_mel_spectrogram(audio, n_mels=model.dims.n_mels).to(args.device)
    mel = mel.unsqueeze(0).repeat(b, 1, 1).to(torch.float16 if half else torch.float32)
    prompt = torch.tensor([[50258, 50259, 50360, 50364]] * b, device=args.device)  # sot, en, transcribe, notimestamps
    with torch.inference_mode():
        feats = model.embed_audio(mel)
        enc = best_rate(lambda: model.embed_audio(mel), b, args.rounds, sync, "whisper_encoder")

        def decode():
            cache, hooks = model.install_kv_cache_hooks()
            try:
                logits = model.decoder(prompt, feats, kv_cache=cache)
                for _ in range(args.tokens):
                    nxt = logits[:, -1].argmax(-1, keepdim=True)
                    logits = model.decoder(nxt, feats, kv_cache=cache)
            finally:
                for h in hooks:
                    h.remove()

        dec = best_rate(decode, b, args.rounds, sync, "whisper_decoder")
    ce, cd = CPU_RATES["whisper_encoder"], CPU_RATES["whisper_decoder"]
    print(f"  whisper large-v3, batch {b}: encoder {1 / enc:.3f} s per 30 s window ({1 / ce:.3f} CPU-s); "
          f"decoding {args.tokens} tokens {1 / dec:.3f} s per utterance ({1 / cd:.3f} CPU-s), of which the "
          f"first step also projects the 1500 encoder frames for every layer's cross-attention")
    CPU_RATES["whisper"] = 1 / (1 / CPU_RATES["whisper_encoder"] + 1 / CPU_RATES["whisper_decoder"])
    return 1 / (1 / enc + 1 / dec), f"utterances/s ({args.tokens} tokens each)"


STAGES = {"egemaps": stage_egemaps, "pase": stage_pase, "text": stage_text, "whisper": stage_whisper}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stages", nargs="+", choices=list(STAGES), default=["egemaps", "pase", "text"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    ap.add_argument("--seconds", type=float, default=5.55, help="clip length (MSP-PODCAST mean: 5.55 s)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--text-batch", type=int, default=32)
    ap.add_argument("--whisper-batch", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=20, help="decoder steps per utterance after the 4 prompt tokens")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(args.seconds * 16000))).astype(np.float32)
    where = f"{args.device}{' (' + torch.cuda.get_device_name() + ')' if cuda else ''}, threads {torch.get_num_threads()}"
    print(f"clips of {args.seconds:g} s, {where}")
    for name in args.stages:
        rate, unit = STAGES[name](args, wav, sync)
        cpu = CPU_RATES[name]
        print(f"{name}: {rate:.3f} {unit} = {rate * args.seconds:.1f} s of audio per s; per CPU-second of this "
              f"process: {cpu:.3f} (= {cpu * args.seconds:.1f} s of audio)")


if __name__ == "__main__":
    main()
