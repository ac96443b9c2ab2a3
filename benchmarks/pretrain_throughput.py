"""Training steps/s of ``pretrain.train.train_step`` vs a re-creation of the authors' training loop.

    python benchmarks/pretrain_throughput.py --size base --batch 2 --seconds 2 --device cpu
    python benchmarks/pretrain_throughput.py --size base --batch 32 --seconds 5 --device cuda

The authors' loop (iiscleap/CARE ``pretraining/train_pase.py`` + ``model_pase.py``) is re-created
with the same Hugging Face modules, composed as their ``SpeechTextModel.forward`` does: fp32, no
masks, dropout after the WavLM layer norm, down/up Conv1d blocks around the RoBERTa layers 7-12
(frozen but left in train mode, as there), mean pooling over all frames, two AdamW, and their
gradient routing: ``distil_loss.backward(retain_graph=True)``, then hooks that zero the common
parameters' gradients during ``opensmile_loss.backward()``. Both sides get the same random
weights' architecture (``CareConfig``), the same batch of full-length crops and the same machine.
The trainer side is the real ``train_step`` (autocast bf16 on CUDA when supported, fp32 on CPU).

Rounds alternate between the two sides and the best round of each is kept, which makes the
ratio robust to other processes on a shared machine. The last line is the ratio.
"""
from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch
from torch import nn


class AuthorsSpeechTextModel(nn.Module):
    """``SpeechTextModel`` (mode="speech", use_conv="True", pool_fn="avg"), minus its tokenizer."""

    def __init__(self, wavlm_model, roberta_model, acoustic_dim: int, num_layers: int = 6):
        super().__init__()
        hidden = wavlm_model.config.hidden_size
        self.audio_feature_extractor = nn.Sequential(*wavlm_model.feature_extractor.conv_layers)
        self.feature_projection_audio = wavlm_model.feature_projection
        self.pos_conv = wavlm_model.encoder.pos_conv_embed
        self.wavlm_layer_norm = wavlm_model.encoder.layer_norm
        self.wavlm_dropout = nn.Dropout(0.1, inplace=False)
        n = len(wavlm_model.encoder.layers)
        self.audio_model = nn.ModuleList([wavlm_model.encoder.layers[i] for i in range(num_layers)])
        self.dual_model = nn.ModuleList([wavlm_model.encoder.layers[i] for i in range(num_layers, n)])
        self.linear = nn.Linear(hidden, acoustic_dim)
        n_text = len(roberta_model.encoder.layer)
        self.common_model = nn.ModuleList([roberta_model.encoder.layer[i] for i in range(n_text - 6, n_text)])
        self.downblock = nn.ModuleList([nn.Conv1d(hidden, hidden, kernel_size=5, stride=3) for _ in range(6)])
        self.upblock = nn.ModuleList(
            [nn.ConvTranspose1d(hidden, hidden, kernel_size=5, stride=3, output_padding=1) for _ in range(6)])

    def forward(self, audio):
        audio_features = self.audio_feature_extractor(audio)
        audio_features = audio_features.permute(0, 2, 1)
        audio_features = self.feature_projection_audio(audio_features)[0]
        audio_features = audio_features.permute(0, 2, 1)
        audio_features_conv = self.pos_conv(audio_features.transpose(1, 2))
        audio_features_conv = audio_features_conv.transpose(1, 2)
        audio_features = audio_features + audio_features_conv
        audio_features = self.wavlm_layer_norm(audio_features.transpose(1, 2))
        speech_feats = self.wavlm_dropout(audio_features)
        position_bias = None
        for i, layer in enumerate(self.audio_model):
            speech_feats, position_bias = layer(speech_feats, position_bias=position_bias)[:2]
        inp = speech_feats
        speech_only_feats = speech_feats
        for layer in self.dual_model:
            speech_only_feats, position_bias = layer(speech_only_feats, position_bias=position_bias)[:2]
        speech_only_feats_os = self.linear(speech_only_feats)
        x = inp
        for i, layer in enumerate(self.common_model):
            x = self.downblock[i](x.permute(0, 2, 1)).permute(0, 2, 1)
            x = layer(x)[0]
            x = self.upblock[i](x.permute(0, 2, 1)).permute(0, 2, 1)
        pooled_audio = torch.mean(x, 1)
        return speech_only_feats_os, pooled_audio


def build_authors(cfg, device):
    from transformers import RobertaModel, WavLMModel

    wavlm = WavLMModel(cfg.wavlm_config())
    text_cfg = cfg.text_config()
    roberta = RobertaModel(text_cfg, add_pooling_layer=False)
    model = AuthorsSpeechTextModel(wavlm, roberta, cfg.acoustic_target_dim).to(device)
    common, dual = [], []
    for name, p in model.named_parameters():  # train_pase.py's split
        if "upblock" in name or "downblock" in name or "audio_model" in name:
            p.requires_grad = True
            common.append(p)
        elif "dual_model" in name or name.startswith("linear"):
            p.requires_grad = True
            dual.append(p)
        else:
            p.requires_grad = False
    opt = dict(lr=1e-5, betas=(0.9, 0.99), eps=1e-6, weight_decay=0)
    return model.train(), common, torch.optim.AdamW(common, **opt), torch.optim.AdamW(dual, **opt)


def authors_step(model, common_params, common_opt, dual_opt, wavs, y_sem, y_ac):
    speech_feats, pooled = model(wavs.unsqueeze(1))
    distil_loss = nn.MSELoss()(y_sem, pooled)
    opensmile_loss = nn.MSELoss()(speech_feats, y_ac[:, :speech_feats.shape[1]])
    distil_loss.backward(retain_graph=True)
    handles = [p.register_hook(lambda g: torch.zeros_like(g)) for p in common_params]
    opensmile_loss.backward()
    for h in handles:
        h.remove()
    common_opt.step()
    dual_opt.step()
    common_opt.zero_grad()
    dual_opt.zero_grad()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("tiny", "base"), default="base")
    ap.add_argument("--batch", type=int, default=2, help="utterances per step (the paper: 128)")
    ap.add_argument("--seconds", type=float, default=2.0, help="crop length (the paper: 5 s)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from care_upstream.config import CareConfig
    from care_upstream.model import CARE
    from pretrain.config import TrainConfig
    from pretrain.train import make_optimizer, split_parameters, train_step

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sem_dim, ac_dim = 768, 256
    if args.size == "tiny":
        cfg = CareConfig.tiny(text="roberta", semantic_target_dim=32, acoustic_target_dim=8)
        sem_dim, ac_dim = 32, 8
    else:
        cfg = CareConfig.base(semantic_target_dim=sem_dim, acoustic_target_dim=ac_dim)
    n = int(args.seconds * 16000)
    t = cfg.num_frames(n)
    g = torch.Generator().manual_seed(0)
    wavs = (0.1 * torch.randn(args.batch, n, generator=g)).to(device)
    lengths = torch.full((args.batch,), n, dtype=torch.long, device=device)
    y_sem = torch.randn(args.batch, sem_dim, generator=g).to(device)
    y_ac = torch.randn(args.batch, t, ac_dim, generator=g).to(device)
    targets = {"semantic": y_sem, "acoustic": y_ac, "acoustic_mask": torch.ones(args.batch, t, dtype=torch.bool)}

    torch.manual_seed(0)
    ours = CARE(cfg).to(device).train()
    sem_p, ac_p = split_parameters(ours, cfg.freeze_frontend)
    tc = TrainConfig(batch_size=args.batch, device=str(device))
    opts = (make_optimizer(sem_p, tc, device.type), make_optimizer(ac_p, tc, device.type))
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else (torch.float16 if cuda else None)
    ctx = torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    micro = [(wavs, lengths, targets)]
    theirs, common, common_opt, dual_opt = build_authors(cfg, device)

    sides = {
        "trainer": lambda: train_step(ours, micro, opts, scaler, ctx, tc, device),
        "authors": lambda: authors_step(theirs, common, common_opt, dual_opt, wavs, y_sem, y_ac),
    }

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    for fn in sides.values():
        for _ in range(args.warmup):
            fn()
    sync()
    best = {k: 0.0 for k in sides}
    best_cpu = {k: 0.0 for k in sides}  # steps per second of this process's CPU time (per core-second at 1 thread)
    for r in range(args.rounds):
        for name, fn in sides.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                fn()
            sync()
            sps = args.steps / (time.perf_counter() - t0)
            best[name] = max(best[name], sps)
            best_cpu[name] = max(best_cpu[name], args.steps / max(time.process_time() - c0, 1e-9))
            print(f"round {r + 1} {name}: {sps:.3f} steps/s")
    print(f"size {args.size}, batch {args.batch} x {args.seconds:g} s, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}, threads {torch.get_num_threads()}, "
          f"trainer dtype {dtype or torch.float32}, authors fp32")
    for name, v in best.items():
        print(f"{name}: {v:.3f} steps/s ({v * args.batch:.2f} utterances/s); per CPU-second of this process: "
              f"{best_cpu[name] * args.batch:.3f} utterances")
    print(f"trainer/authors steps/s ratio: {best['trainer'] / best['authors']:.3f}")


if __name__ == "__main__":
    main()
