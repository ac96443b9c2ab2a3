"""Forward time of the CARE upstream vs s3prl's own WavLM upstream, both full size, random weights.

Not a test: a measurement. Both models see the same batch through their s3prl expert interface
(``expert(list_of_wavs)``), timed interleaved (CARE, WavLM, CARE, ...) after a warm-up, and the
median of each is compared. The WavLM side is s3prl's ``upstream/wavlm`` expert loading a
UniLM-format ``{"cfg", "model"}`` checkpoint written to a temp file (WavLM-base architecture).

    python benchmarks/upstream_speed.py [--batch 8] [--seconds 10] [--repeats 3] [--threads 2]

The last line is ``care/wavlm forward time ratio: R`` (CPU; CUDA also measured when present,
in float32 and under bf16 autocast, reported before it). The goal is R <= 1.05: CARE adds a
semantic branch (~9% of WavLM's FLOPs), so its WavLM half must run faster than s3prl's WavLM
(SDPA attention, the folded first conv layer). The 1-minute load average is printed before and
after: on a machine shared with other jobs, wall times stretch and the process-CPU ratio is the
steadier number.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

# WavLM-base in the UniLM / s3prl config vocabulary (architecture of microsoft/wavlm-base).
UNILM_WAVLM_BASE = dict(
    extractor_mode="default",
    encoder_layers=12,
    encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072,
    encoder_attention_heads=12,
    conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    conv_bias=False,
    normalize=False,
    relative_position_embedding=True,
    gru_rel_pos=True,
    num_buckets=320,
    max_distance=800,
    conv_pos=128,
    conv_pos_groups=16,
    layer_norm_first=False,
)


@dataclass
class BenchConfig:
    batch: int = 8
    seconds: float = 10.0
    repeats: int = 3
    warmup: int = 1
    threads: int = 2
    sample_rate: int = 16000
    seed: int = 0


def build_wavlm_expert(tmp: Path):
    from s3prl.upstream.wavlm.expert import UpstreamExpert as WavLMExpert
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    model = WavLM(WavLMConfig(UNILM_WAVLM_BASE))
    ckpt = tmp / "wavlm_base_random.pt"
    torch.save({"cfg": dict(UNILM_WAVLM_BASE), "model": model.state_dict()}, ckpt)
    return WavLMExpert(str(ckpt))


def build_care_expert(variant: str = "care"):
    from care_upstream.config import CareConfig
    from care_upstream.expert import UpstreamExpert
    from care_upstream.model import CARE

    return UpstreamExpert(CARE(CareConfig.base()), variant=variant)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds). On a shared machine the CPU time is the steadier
    estimate of the work done; the wall time is what the ratio line reports."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def compare(cfg: BenchConfig, device: torch.device, care, wavlm, bf16: bool = False) -> float:
    care.to(device).eval()
    wavlm.to(device).eval()
    g = torch.Generator().manual_seed(cfg.seed)
    n = int(cfg.seconds * cfg.sample_rate)
    wavs: List[torch.Tensor] = [(0.1 * torch.randn(n, generator=g)).to(device) for _ in range(cfg.batch)]
    runs = {"care": lambda: care(wavs), "wavlm": lambda: wavlm(wavs)}
    tag = f"{device.type}{' bf16' if bf16 else ''}"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = {name: [] for name in runs}
    cpu_times = {name: [] for name in runs}
    with torch.inference_mode(), autocast:
        for _ in range(cfg.warmup):
            for fn in runs.values():
                fn()
        for _ in range(cfg.repeats):
            for name, fn in runs.items():
                wall, cpu = _timed(fn, device)
                times[name].append(wall)
                cpu_times[name].append(cpu)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"[{tag}] {name}: median {med[name]:.3f} s over {len(t)} runs ({', '.join(f'{x:.3f}' for x in t)}); "
              f"process CPU median {statistics.median(cpu_times[name]):.3f} s")
    ratio = med["care"] / med["wavlm"]
    if device.type == "cpu":
        cpu_ratio = statistics.median(cpu_times["care"]) / statistics.median(cpu_times["wavlm"])
        print(f"[{tag}] care/wavlm process-CPU-time ratio = {cpu_ratio:.3f}")
    print(f"[{tag}] care/wavlm = {ratio:.3f}")
    return ratio


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = BenchConfig()
    for field in ("batch", "seconds", "repeats", "warmup", "threads"):
        parser.add_argument(f"--{field}", type=type(getattr(defaults, field)), default=getattr(defaults, field))
    parser.add_argument("--variant", default="care", help="CARE variant to time (care_acoustic isolates the WavLM part)")
    parser.add_argument("--no-cuda", action="store_true", help="CPU only even when CUDA is available")
    args = parser.parse_args(argv)
    cfg = BenchConfig(batch=args.batch, seconds=args.seconds, repeats=args.repeats, warmup=args.warmup,
                      threads=args.threads)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    print(f"batch {cfg.batch} x {cfg.seconds:g} s, {cfg.repeats} repeats after {cfg.warmup} warm-up, "
          f"{cfg.threads} CPU threads, CARE variant {args.variant}, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        wavlm = build_wavlm_expert(Path(tmp))
    care = build_care_expert(args.variant)
    if torch.cuda.is_available() and not args.no_cuda:
        print(f"CUDA device: {torch.cuda.get_device_name(0)}")
        compare(cfg, torch.device("cuda"), care, wavlm)
        compare(cfg, torch.device("cuda"), care, wavlm, bf16=True)
        care.cpu(), wavlm.cpu()
    ratio = compare(cfg, torch.device("cpu"), care, wavlm)
    print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"care/wavlm forward time ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
