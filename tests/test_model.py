"""CARE model core: config, padding invariance, HF WavLM parity, gradient routing, persistence."""

import json
import math
import pickle

import pytest
import torch
from torch import nn

from care_upstream.config import VARIANTS, CareConfig
from care_upstream.model import CARE, build_care

torch.set_num_threads(1)

LENGTHS = [16000, 5333, 9000]  # longest / shortest = 3x


def _wavs(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) * 0.1 for n in lengths]


def _batch(wavs):
    return nn.utils.rnn.pad_sequence(wavs, batch_first=True), torch.tensor([w.numel() for w in wavs])


def _model(text="roberta", seed=0, **kwargs):
    torch.manual_seed(seed)
    return CARE(CareConfig.tiny(text, **kwargs)).eval()


# ---- config ---------------------------------------------------------------------------------
def test_base_config_matches_wavlm_base_and_roberta_base():
    cfg = CareConfig.base()
    w, t = cfg.wavlm, cfg.text
    assert (w["hidden_size"], w["num_attention_heads"], w["intermediate_size"]) == (768, 12, 3072)
    assert w["conv_dim"] == [512] * 7 and w["conv_stride"] == [5, 2, 2, 2, 2, 2, 2]
    assert w["conv_kernel"] == [10, 3, 3, 3, 3, 2, 2] and w["conv_bias"] is False
    assert w["feat_extract_norm"] == "group" and w["num_conv_pos_embeddings"] == 128
    assert (w["num_buckets"], w["max_bucket_distance"], w["layer_norm_eps"]) == (320, 800, 1e-5)
    assert t["model_type"] == "roberta"
    assert (t["vocab_size"], t["max_position_embeddings"], t["type_vocab_size"]) == (50265, 514, 1)
    assert (t["layer_norm_eps"], t["pad_token_id"], t["num_hidden_layers"]) == (1e-5, 1, 12)
    assert cfg.text_layer_start == 6  # RoBERTa layers 7-12
    assert cfg.downsample_rate == 320
    assert cfg.min_samples("care_acoustic") == 400
    assert all(cfg.min_samples(v) == 400 for v in VARIANTS)  # one frame; the semantic branch pads itself
    assert cfg.num_frames(16000) == 49


def test_tiny_configs_and_text_layer_start():
    assert CareConfig.tiny("roberta").text_layer_start == 6
    mini = CareConfig.tiny("minilm")
    assert mini.text_layer_start == 0 and mini.text_hidden_size != mini.hidden_size
    with pytest.raises(ValueError, match="tiny text"):
        CareConfig.tiny("gpt")


def test_config_json_round_trip():
    cfg = CareConfig.tiny("minilm", acoustic_grad_to_common=True)
    again = CareConfig.from_json(cfg.to_json())
    assert again == cfg
    assert CareConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_common=0), "n_common"),
        (dict(adapter_output_padding=3), "output_padding"),
        (dict(text_layer_start=8), "text_layer_start"),
        (dict(adapter_stride=True), "adapter_stride"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CareConfig.tiny("roberta", **kwargs)


def test_config_rejects_non_bert_like_text_encoders():
    from transformers import DistilBertConfig

    d = CareConfig.tiny().to_dict()
    with pytest.raises(ValueError, match="BERT-like"):
        CareConfig.from_dict({**d, "text": DistilBertConfig(n_layers=6).to_dict()})


def test_config_rejects_unknown_fields_and_bad_wavlm():
    d = CareConfig.tiny().to_dict()
    with pytest.raises(ValueError, match="unknown"):
        CareConfig.from_dict({**d, "nope": 1})
    wavlm = dict(d["wavlm"], conv_stride=[5, 2])
    with pytest.raises(ValueError, match="equally long"):
        CareConfig.from_dict({**d, "wavlm": wavlm})


# ---- padding invariance ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, norm, normalize",
    [("roberta", "group", False), ("minilm", "group", False), ("roberta", "layer", True)],
)
def test_padded_batch_equals_each_utterance_alone(text, norm, normalize):
    cfg = CareConfig.tiny(text, normalize_waveform=normalize)
    cfg = CareConfig.from_dict({**cfg.to_dict(), "wavlm": {**cfg.wavlm, "feat_extract_norm": norm}})
    torch.manual_seed(0)
    model = CARE(cfg).eval()
    wavs = _wavs(LENGTHS)
    batch, lengths = _batch(wavs)
    with torch.no_grad():
        out = model(batch, lengths, with_heads=True)
        alone = [model(w[None], with_heads=True) for w in wavs]
        assert out.frame_lengths.tolist() == [a.conv.shape[1] for a in alone]
        assert out.pad_mask.sum(1).tolist() == [out.conv.shape[1] - a.conv.shape[1] for a in alone]
        for variant in VARIANTS:
            states = model.hidden_states(out, variant)
            assert len(states) == 13
            for i, a in enumerate(alone):
                ref = model.hidden_states(a, variant)
                t = ref[0].shape[1]
                for layer, (h, r) in enumerate(zip(states, ref)):
                    diff = (h[i, :t] - r[0]).abs().max().item()
                    assert diff <= 1e-4, (variant, i, layer, diff)
                    assert h[i, t:].abs().max().item() == 0 if h.shape[1] > t else True
        for i, a in enumerate(alone):
            assert torch.allclose(out.semantic_pred[i], a.semantic_pred[0], atol=1e-4)
            t = a.conv.shape[1]
            assert torch.allclose(out.acoustic_pred[i, :t], a.acoustic_pred[0], atol=1e-4)


@pytest.mark.parametrize("text", ["roberta", "minilm"])
def test_one_frame_utterances_work_in_every_variant_padded_or_alone(text):
    """400 samples (1 frame) up to 1679 (4 frames, under one adapter window): the semantic branch
    pads itself, every variant gives num_frames(N) frames, and a padded batch equals each alone."""
    model = _model(text, seed=2)
    lengths = [400, 800, 1679, 2000, 16000]
    wavs = _wavs(lengths, seed=4)
    batch, lens = _batch(wavs)
    with torch.no_grad():
        out = model(batch, lens, with_heads=True)
        alone = [model(w[None], with_heads=True) for w in wavs]
    expected = [model.config.num_frames(n) for n in lengths]
    assert expected[:3] == [1, 2, 4] and out.frame_lengths.tolist() == expected
    assert [a.conv.shape[1] for a in alone] == expected
    for variant in VARIANTS:
        batched = model.hidden_states(out, variant)
        for i, a in enumerate(alone):
            t = expected[i]
            for h, r in zip(batched, model.hidden_states(a, variant)):
                assert r.shape[1] == t and torch.isfinite(r).all()
                # 2e-6 per unit of the state's scale: a few float32 ulps (GEMM blocking differs with T)
                tol = 2e-6 * max(1.0, r.abs().max().item())
                assert (h[i, :t] - r[0]).abs().max().item() <= tol, (variant, i)
                assert h[i, t:].abs().max().item() == 0 if h.shape[1] > t else True
    for i, a in enumerate(alone):  # the one-frame utterance gets a real (non-zero) semantic frame
        assert all(s[0].abs().max() > 0 for s in a.semantic)
        assert (out.semantic_pred[i] - a.semantic_pred[0]).abs().max() <= 2e-6 * max(1.0, a.semantic_pred.abs().max())
    assert torch.isfinite(out.semantic_pred).all() and torch.isfinite(out.acoustic_pred).all()


def test_masked_group_norm_is_what_makes_the_front_end_exact():
    """Plain GroupNorm over a padded batch would see the padding: the masked one must differ from it."""
    model = _model()
    wavs = _wavs([16000, 5333])
    batch, lengths = _batch(wavs)
    with torch.no_grad():
        masked, _ = model.frontend(batch, lengths)
        plain, _ = model.frontend(batch, None)
        alone, _ = model.frontend(wavs[1][None], None)
    t = alone.shape[1]
    assert (masked[1, :t] - alone[0]).abs().max() < 1e-5
    assert (plain[1, :t] - alone[0]).abs().max() > 1e-3


def test_folded_first_conv_layer_equals_conv_then_group_norm():
    """The front end's first layer computed as one product with per-utterance weights equals
    HF's conv -> GroupNorm, with the norm over all steps or over each utterance's valid steps."""
    from care_upstream.frontend import conv_lengths, folded_conv_group_norm, frame_mask, masked_group_norm

    torch.manual_seed(0)
    conv, norm = nn.Conv1d(1, 64, 10, stride=5, bias=True), nn.GroupNorm(64, 64)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    wavs = torch.stack(_wavs([16000, 16000], seed=2))
    lengths = conv_lengths(torch.tensor([16000, 6000]), 10, 5)
    with torch.no_grad():
        y = conv(wavs[:, None])
        plain, folded = norm(y), folded_conv_group_norm(wavs, conv, norm).transpose(1, 2)
        masked = masked_group_norm(y, norm, frame_mask(lengths, y.shape[-1]))
        folded_masked = folded_conv_group_norm(wavs, conv, norm, lengths).transpose(1, 2)
    assert (plain - folded).abs().max() <= 1e-5 * plain.abs().max()
    valid = frame_mask(lengths, y.shape[-1])[:, None]
    assert ((masked - folded_masked) * valid).abs().max() <= 1e-5 * masked.abs().max()
    assert (folded_masked[1] - folded[1]).abs().max() > 1e-2  # the mask really changes the statistics


def test_semantic_zero_beyond_own_adapter_output_and_lengths():
    model = _model()
    # 16000 samples -> 49 frames -> 15 adapter frames -> 14*3+5+1 = 48 < 49: the last frame is zero.
    out = model(_wavs([16000])[0][None])
    assert model.config.adapter_frames(49) == 15
    for s in out.semantic:
        assert s.shape[1] == 49 and s[0, 48].abs().max() == 0 and s[0, 47].abs().max() > 0


@pytest.mark.parametrize("variant, width", [("care", 64), ("care_acoustic", 32), ("care_semantic", 32)])
def test_thirteen_states_of_the_right_shape(variant, width):
    model = _model()
    batch, lengths = _batch(_wavs([16000, 8000]))
    with torch.no_grad():
        out = model(batch, lengths, variant=variant)
    states = model.hidden_states(out, variant)
    assert len(states) == 13
    assert all(h.shape == (2, 49, width) for h in states)
    if variant == "care":
        assert torch.equal(states[3][..., :32], states[3][..., 32:])
        # row 0 is the unpadded one (padding frames of the others are zeroed in the states)
        assert torch.equal(states[9][0, :, :32], out.acoustic[2][0])
        assert torch.equal(states[9][0, :, 32:], out.semantic[2][0])
    else:
        other = "care_semantic" if variant == "care_acoustic" else "care_acoustic"
        with pytest.raises(ValueError, match="path"):
            model.hidden_states(out, other)


# ---- parity with Hugging Face WavLMModel -----------------------------------------------------
def _hf_wavlm_to_care(hf_state, n_common):
    """Key map HF WavLMModel -> CARE (a local stand-in for care_upstream.load)."""
    out = {}
    for k, v in hf_state.items():
        if k.startswith("feature_extractor.conv_layers."):
            out["frontend." + k[len("feature_extractor."):]] = v
        elif k.startswith("feature_projection."):
            out["frontend." + k] = v
        elif k.startswith("encoder.pos_conv_embed.") or k.startswith("encoder.layer_norm."):
            out["frontend." + k[len("encoder."):]] = v
        elif k.startswith("encoder.layers."):
            i, rest = k[len("encoder.layers."):].split(".", 1)
            i = int(i)
            out[f"common.{i}.{rest}" if i < n_common else f"acoustic.{i - n_common}.{rest}"] = v
    return out


def test_common_and_acoustic_equal_hf_wavlm_model():
    from transformers import WavLMModel

    cfg = CareConfig.tiny()
    torch.manual_seed(1)
    hf = WavLMModel(cfg.wavlm_config()).eval()
    model = CARE(cfg).eval()
    missing, unexpected = model.load_state_dict(_hf_wavlm_to_care(hf.state_dict(), cfg.n_common), strict=False)
    assert not unexpected
    assert all(k.startswith(("semantic.", "acoustic_head.")) for k in missing)
    wav = _wavs([12345], seed=3)[0][None]
    with torch.no_grad():
        ref = hf(wav, output_hidden_states=True).hidden_states
        out = model(wav, variant="care_acoustic")
    ours = model.hidden_states(out, "care_acoustic")
    assert len(ref) == len(ours) == 13
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert (a - b).abs().max().item() <= 1e-5, i


# ---- attention through SDPA == the Hugging Face layers it replaced ----------------------------
class _HFWavLMLayer(nn.Module):
    """transformers' WavLMEncoderLayer behind CARE's layer signature: the attention path CARE used
    before SDPA (F.multi_head_attention_forward with a bool key-padding mask + float bias)."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, x, pad_mask, position_bias):
        import warnings

        mask = None if pad_mask is None else (~pad_mask).long()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            return tuple(self.hf(x, attention_mask=mask, position_bias=position_bias)[:2])


class _HFTextLayer(nn.Module):
    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, x, attention_mask):
        return self.hf(x, attention_mask=attention_mask)[0]


def _with_hf_layers(model):
    """A copy of ``model`` whose WavLM and text layers are transformers' own (eager attention),
    loaded with the same weights: the computation CARE did before its layers used SDPA."""
    import copy

    from transformers import AutoModel
    from transformers.models.wavlm.modeling_wavlm import WavLMEncoderLayer

    ref = copy.deepcopy(model)
    wcfg = model.config.wavlm_config()
    for stack in (ref.common, ref.acoustic):
        for i, layer in enumerate(stack):
            hf = WavLMEncoderLayer(wcfg, has_relative_position_bias=hasattr(layer.attention, "rel_attn_embed"))
            hf.load_state_dict(layer.state_dict())
            stack[i] = _HFWavLMLayer(hf.eval())
    tcfg = model.config.text_config()
    tcfg.num_hidden_layers = 1
    for i, layer in enumerate(ref.semantic.layers):
        hf = AutoModel.from_config(tcfg, attn_implementation="eager").encoder.layer[0]
        hf.load_state_dict(layer.state_dict())
        ref.semantic.layers[i] = _HFTextLayer(hf.eval())
    return ref.eval()


@pytest.mark.parametrize("text", ["roberta", "minilm"])
def test_sdpa_layers_equal_the_hf_layers_they_replaced(text):
    model = _model(text, seed=6)
    ref = _with_hf_layers(model)
    batch, lengths = _batch(_wavs([16000, 5333, 9000], seed=7))
    with torch.no_grad():
        for lens in (lengths, None):
            out, old = model(batch, lens, with_heads=True), ref(batch, lens, with_heads=True)
            for variant in VARIANTS:
                for i, (a, b) in enumerate(zip(model.hidden_states(out, variant), ref.hidden_states(old, variant))):
                    assert (a - b).abs().max().item() <= 1e-5, (variant, i)
            assert (out.semantic_pred - old.semantic_pred).abs().max().item() <= 1e-5


def test_bf16_autocast_stays_close_to_fp32():
    """The CUDA recipe (bf16 autocast) checked on CPU: every state finite, the dtype mix accepted
    by SDPA, and each state within bf16 rounding of the fp32 one, padded batch included."""
    model = _model("minilm", seed=8)
    batch, lengths = _batch(_wavs([16000, 7000], seed=9))
    with torch.no_grad():
        ref = model.hidden_states(model(batch, lengths))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch, lengths, with_heads=True)
            low = model.hidden_states(out)
    assert any(h.dtype == torch.bfloat16 for h in low)
    for i, (a, b) in enumerate(zip(low, ref)):
        a = a.float()
        assert torch.isfinite(a).all()
        rel = ((a - b).norm() / b.norm()).item()
        assert rel <= 0.03, (i, rel)
        assert a[1, out.frame_lengths[1]:].abs().max() == 0  # padding still exactly zero


def test_from_teachers_loads_both_teachers(tmp_path):
    from transformers import BertModel, WavLMModel

    cfg = CareConfig.tiny("minilm")
    torch.manual_seed(3)
    WavLMModel(cfg.wavlm_config()).save_pretrained(tmp_path / "wavlm")
    bert = BertModel(cfg.text_config()).eval()
    bert.save_pretrained(tmp_path / "bert")
    model = CARE.from_teachers(wavlm=str(tmp_path / "wavlm"), text=str(tmp_path / "bert")).eval()
    hf = WavLMModel.from_pretrained(tmp_path / "wavlm").eval()
    wav = _wavs([7000], seed=4)[0][None]
    with torch.no_grad():
        ref = hf(wav, output_hidden_states=True).hidden_states
        ours = model.hidden_states(model(wav), "care_acoustic")
        h = torch.randn(1, 5, cfg.text_hidden_size)
        assert torch.allclose(model.semantic.layers[2](h)[0], bert.encoder.layer[2](h)[0], atol=1e-6)
    assert all((a - b).abs().max() <= 1e-5 for a, b in zip(ours, ref))


# ---- gradient routing and modes --------------------------------------------------------------
def _grads(module):
    return [p.grad for p in module.parameters() if p.requires_grad]


def _is_zero(grads):
    return all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def _is_nonzero(grads):
    return any(g is not None and torch.count_nonzero(g) > 0 for g in grads)


def test_acoustic_loss_stays_out_of_the_common_encoder():
    model = _model().train()
    batch, lengths = _batch(_wavs([8000, 6000]))
    out = model(batch, lengths, with_heads=True)
    out.acoustic_pred.pow(2).mean().backward()
    assert _is_zero(_grads(model.common))
    assert _is_nonzero(_grads(model.acoustic)) and _is_nonzero(_grads(model.acoustic_head))
    assert _is_zero(_grads(model.semantic))


def test_acoustic_grad_to_common_flag_opens_the_path():
    model = _model(acoustic_grad_to_common=True).train()
    out = model(_wavs([8000])[0][None], with_heads=True)
    out.acoustic_pred.pow(2).mean().backward()
    assert _is_nonzero(_grads(model.common))


def test_semantic_loss_moves_common_and_adapters_not_acoustic():
    model = _model("minilm").train()
    batch, lengths = _batch(_wavs([8000, 6000]))
    out = model(batch, lengths, with_heads=True)
    out.semantic_pred.pow(2).mean().backward()
    assert _is_nonzero(_grads(model.common))
    for part in (model.semantic.down, model.semantic.up, model.semantic.head_proj):
        assert _is_nonzero(_grads(part))
    assert _is_zero(_grads(model.acoustic)) and _is_zero(_grads(model.acoustic_head))


def test_frozen_parts_have_no_grad_and_text_layers_stay_in_eval():
    model = _model().train()
    assert not any(p.requires_grad for p in model.semantic.layers.parameters())
    assert not any(p.requires_grad for p in model.frontend.parameters())
    assert model.common.training and not any(m.training for m in model.semantic.layers.modules())
    out = model(_wavs([8000])[0][None], with_heads=True)
    assert not out.conv.requires_grad
    (out.semantic_pred.sum() + out.acoustic_pred.sum()).backward()
    assert all(p.grad is None for p in model.semantic.layers.parameters())
    assert all(p.grad is None for p in model.frontend.parameters())


def test_text_layers_are_deterministic_under_train():
    cfg = CareConfig.tiny("minilm")
    no_dropout = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0)
    cfg = CareConfig.from_dict({**cfg.to_dict(), "wavlm": {**cfg.wavlm, **no_dropout}})
    assert cfg.text["hidden_dropout_prob"] > 0  # text dropout would change outputs if it ran
    torch.manual_seed(2)
    model = CARE(cfg).train()
    wav = _wavs([8000])[0][None]
    with torch.no_grad():
        a, b = model(wav).semantic[-1], model(wav).semantic[-1]
    assert torch.equal(a, b)
    model.semantic.layers.train()  # the check can fail: with text dropout on, outputs differ
    with torch.no_grad():
        assert not torch.equal(model(wav).semantic[-1], a)


def test_unfrozen_front_end_gets_grad():
    model = _model(freeze_frontend=False).train()
    out = model(_wavs([8000])[0][None], with_heads=True)
    out.semantic_pred.sum().backward()
    assert _is_nonzero(_grads(model.frontend))


# ---- bad input -------------------------------------------------------------------------------
def test_bad_input_raises_value_errors():
    model = _model()
    good = torch.zeros(2, 4000)
    with pytest.raises(ValueError, match="batch, samples"):
        model(torch.zeros(4000))
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(2, 0))
    bad = good.clone()
    bad[1, 7] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf \(batch rows \[1\]\)"):
        model(bad)
    with pytest.raises(ValueError, match="lengths must have shape"):
        model(good, torch.tensor([4000]))
    with pytest.raises(ValueError, match="exceed"):
        model(good, torch.tensor([4000, 4001]))
    for variant in VARIANTS:
        with pytest.raises(ValueError, match=r"\(row, samples\) \[\(0, 399\)\]; need at least 400 samples"):
            model(torch.zeros(1, 399), variant=variant)
    with pytest.raises(ValueError, match="variant"):
        model(good, variant="care_both")
    with pytest.raises(ValueError, match="16000 Hz"):
        model.extract([torch.zeros(4000)], sample_rate=8000)
    with pytest.raises(ValueError, match="wav 1 must be a 1-D"):
        model.extract([torch.zeros(4000), torch.zeros(2, 4000)])
    with pytest.raises(ValueError, match="wav 0 is empty"):
        model.extract([torch.zeros(0)])


# ---- persistence -----------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    model = _model("minilm", seed=5)
    folder = model.save_pretrained(tmp_path / "care")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    wav = _wavs([9000], seed=1)[0][None]
    with torch.no_grad():
        ref = model.hidden_states(model(wav))
        for source in (folder, folder / "model.safetensors"):
            loaded = CARE.from_pretrained(source)
            assert loaded.config == model.config and not loaded.training
            assert all(torch.equal(a, b) for a, b in zip(ref, loaded.hidden_states(loaded(wav))))
    pt = tmp_path / "care.pt"
    torch.save({"config": model.config.to_dict(), "model": model.state_dict()}, pt)
    loaded = CARE.from_pretrained(pt)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ref, loaded.hidden_states(loaded(wav))))


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        CARE.from_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        CARE.from_pretrained(tmp_path / "empty")
    other = _model("roberta").save_pretrained(tmp_path / "other")
    (other / "config.json").write_text(CareConfig.tiny("minilm").to_json())
    with pytest.raises(ValueError, match="do not match"):
        CARE.from_pretrained(other)


def test_build_care_is_strict_and_names_the_keys():
    model = _model("roberta", seed=3)
    state = model.state_dict()
    rebuilt = build_care(model.config.to_dict(), state, source="ckpt_x.pt")
    assert all(torch.equal(state[k], v) for k, v in rebuilt.state_dict().items())
    assert rebuilt.training  # mode is the caller's choice (trainer resumes in train mode)
    missing = {k: v for k, v in state.items() if k != "acoustic_head.bias"}
    with pytest.raises(ValueError, match=r"ckpt_x\.pt: .*1 missing \(acoustic_head\.bias\)"):
        build_care(model.config, missing, source="ckpt_x.pt")
    with pytest.raises(ValueError, match=r"1 unexpected \(extra\.weight\)"):
        build_care(model.config, {**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"other shapes, e\.g\. acoustic_head\.bias \(3,\) vs \(8,\)"):
        build_care(model.config, {**state, "acoustic_head.bias": torch.zeros(3)})
    with pytest.raises(ValueError, match="not a CARE config.*unknown CareConfig fields"):
        build_care({**model.config.to_dict(), "bogus": 1}, state, source="ckpt_x.pt")
    # legacy weight-norm names (a checkpoint written under an older torch) still load
    from care_upstream.load import rename_weight_norm
    legacy = rename_weight_norm(state, parametrized=False)
    assert legacy.keys() != state.keys()
    assert torch.equal(build_care(model.config, legacy).frontend.pos_conv_embed.conv.weight,
                       model.frontend.pos_conv_embed.conv.weight)


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['EVIL_MARK']).write_text('ran')",))


def test_torch_file_is_read_without_running_its_code(tmp_path, monkeypatch):
    mark = tmp_path / "mark"
    monkeypatch.setenv("EVIL_MARK", str(mark))
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"config": {}, "model": _Evil()}, f, protocol=2)
    with pytest.raises(ValueError, match="weights_only"):
        CARE.from_pretrained(path)
    assert not mark.exists()
    with open(path, "rb") as f:  # the file really is hostile: plain unpickling runs it
        pickle.load(f)
    assert mark.read_text() == "ran"


def test_parameter_counts_by_variant():
    model = _model()
    n = {v: model.num_parameters(v) for v in VARIANTS}
    sem = sum(p.numel() for m in (model.semantic.down, model.semantic.layers, model.semantic.up) for p in m.parameters())
    assert n["care"] == n["care_acoustic"] + sem
    assert n["care_semantic"] == n["care"] - sum(p.numel() for p in model.acoustic.parameters())
    assert n["care"] < sum(p.numel() for p in model.parameters())  # heads are not counted
    assert math.isclose(n["care_acoustic"], sum(p.numel() for m in (model.frontend, model.common, model.acoustic)
                                                 for p in m.parameters()))
