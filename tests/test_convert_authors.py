"""The authors' checkpoint format converts into a CARE that computes what theirs does.

``AuthorsSpeechTextModel`` below rebuilds the authors' ``SpeechTextModel`` (iiscleap/CARE
``pretraining/model_pase.py``) with their attribute names and their forward
(``extract_audio_features``) from tiny HF modules, so its state dict has exactly their keys.
"""

import sys
import types

import pytest
import torch
from torch import nn
from transformers import RobertaModel, WavLMModel

from care_upstream.config import CareConfig
from care_upstream.convert_authors import convert_authors_checkpoint, read_authors_checkpoint
from care_upstream.load import CheckpointError, PickledObjectsError
from care_upstream.model import CARE

torch.set_num_threads(1)
ATOL = 1e-5  # per unit of a state's scale (max |value|, at least 1): float32 rounding only. CARE's
# front end computes the first conv layer folded (same math, another summation order), which the
# perturbed weights here amplify to ~3e-6 of a state's scale; a wrong key map is off by O(1).
TINY = CareConfig.tiny()


class AuthorsSpeechTextModel(nn.Module):
    """The authors' module layout and audio forward, from tiny teachers."""

    def __init__(self, wavlm, roberta, acoustic_dim, num_layers=6):
        super().__init__()
        self.audio_feature_extractor = nn.Sequential(*wavlm.feature_extractor.conv_layers)
        self.feature_projection_audio = wavlm.feature_projection
        self.pos_conv = wavlm.encoder.pos_conv_embed
        self.wavlm_layer_norm = wavlm.encoder.layer_norm
        self.wavlm_dropout = nn.Dropout(0.1)
        self.audio_model = nn.ModuleList([wavlm.encoder.layers[i] for i in range(num_layers)])
        self.dual_model = nn.ModuleList([wavlm.encoder.layers[i] for i in range(num_layers, 12)])
        hidden = wavlm.config.hidden_size
        self.linear = nn.Linear(hidden, acoustic_dim)
        self.roberta_embeddings = roberta.embeddings
        self.text_model = nn.ModuleList([roberta.encoder.layer[i] for i in range(num_layers)])
        self.common_model = nn.ModuleList([roberta.encoder.layer[i] for i in range(6, 12)])
        self.downblock = nn.ModuleList([nn.Conv1d(hidden, hidden, 5, stride=3) for _ in range(6)])
        self.upblock = nn.ModuleList(
            [nn.ConvTranspose1d(hidden, hidden, 5, stride=3, output_padding=1) for _ in range(6)]
        )

    def forward(self, audio):
        """Their ``extract_audio_features``: (conv + common + semantic states, conv + common + acoustic)."""
        out_layers, out_layers_aud = [], []
        x = self.audio_feature_extractor(audio.unsqueeze(1)).permute(0, 2, 1)
        x = self.feature_projection_audio(x)[0]
        x = x + self.pos_conv(x)
        x = self.wavlm_dropout(self.wavlm_layer_norm(x))
        out_layers.append(x)
        out_layers_aud.append(x)
        position_bias = None
        for i, layer in enumerate(self.audio_model):
            x, position_bias = layer(x, position_bias=position_bias)[:2]
            out_layers.append(x)
            out_layers_aud.append(x)
        inp = x
        a = x
        for layer in self.dual_model:
            a, position_bias = layer(a, position_bias=position_bias)[:2]
            out_layers_aud.append(a)
        acoustic_pred = self.linear(a)
        x = inp
        for i, layer in enumerate(self.common_model):
            x = self.downblock[i](x.permute(0, 2, 1)).permute(0, 2, 1)
            x = layer(x)[0]
            x = self.upblock[i](x.permute(0, 2, 1)).permute(0, 2, 1)
            if x.shape[1] < inp.shape[1]:
                x = torch.cat((x, torch.zeros(x.shape[0], inp.shape[1] - x.shape[1], x.shape[-1])), 1)
            else:
                x = x[:, : inp.shape[1], :]
            out_layers.append(x)
        return out_layers, out_layers_aud, acoustic_pred, x.mean(1)


class AuthorsEmotionClassifier(nn.Module):
    def __init__(self, joint_model, output_dim=3):
        super().__init__()
        self.joint_model = joint_model
        hidden = joint_model.linear.in_features
        self.fc_text = nn.Linear(hidden * 2, hidden)
        self.act = nn.ReLU()
        self.fc_text_final = nn.Linear(hidden, output_dim)


def _authors_model(seed=0, legacy_weight_norm=False):
    torch.manual_seed(seed)
    wavlm = WavLMModel(TINY.wavlm_config())
    roberta = RobertaModel(TINY.text_config())
    if legacy_weight_norm:
        # The authors saved under an older torch whose weight norm was a hook (weight_g / weight_v),
        # and torch refuses to pickle parametrized modules anyway.
        conv = wavlm.encoder.pos_conv_embed.conv
        torch.nn.utils.parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
        conv._load_state_dict_pre_hooks.clear()  # torch's local compat hook (not picklable, not in old torch)
        torch.nn.utils.weight_norm(conv, name="weight", dim=2)
    model = AuthorsEmotionClassifier(AuthorsSpeechTextModel(wavlm, roberta, TINY.acoustic_target_dim))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _convert(src, out, **kw):
    return convert_authors_checkpoint(src, out, wavlm_config=TINY.wavlm, text_config=TINY.text, **kw)


def _close(a, b, msg):
    diff, scale = (a - b).abs().max().item(), max(1.0, b.abs().max().item())
    assert diff <= ATOL * scale, f"{msg}: {diff:.2e} > {ATOL:g} x {scale:.1f}"


def _assert_same_outputs(authors, care_dir):
    care = CARE.from_pretrained(care_dir).eval()
    wav = torch.randn(1, 8000, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        layers, layers_aud, acoustic_pred, pooled = authors.joint_model(wav)
        out = care(wav, with_heads=True)
    ours = [out.conv, *out.common, *out.semantic]
    ours_aud = [out.conv, *out.common, *out.acoustic]
    assert len(ours) == len(layers) == 13 and len(ours_aud) == len(layers_aud) == 13
    for i, (a, b) in enumerate(zip(ours, layers)):
        _close(a, b, f"fusion layer {i}")
    for i, (a, b) in enumerate(zip(ours_aud, layers_aud)):
        _close(a, b, f"acoustic-path layer {i}")
    _close(out.acoustic_pred, acoustic_pred, "head")
    _close(out.semantic_pred, pooled, "head")


@pytest.mark.parametrize("layout", ["prefixed", "bare", "model_state_dict", "state_dict", "dataparallel"])
def test_state_dict_converts_to_equal_outputs(tmp_path, layout):
    authors = _authors_model()
    state = authors.state_dict()
    assert any(k.startswith("joint_model.audio_feature_extractor.0.conv.") for k in state)
    if layout == "dataparallel":
        state = {"module." + k: v for k, v in state.items()}
    elif layout == "bare":
        state = {k[len("joint_model."):]: v for k, v in state.items() if k.startswith("joint_model.")}
    elif layout not in ("prefixed", "dataparallel"):
        state = {layout: state, "step": 45000}
    src = tmp_path / "model-45000.pth"
    torch.save(state, src)
    report = _convert(src, tmp_path / "care")
    assert report.ok and not report.random_init
    assert any("text_model." in k for k in report.dropped) and any("roberta_embeddings." in k for k in report.dropped)
    assert (tmp_path / "care" / "config.json").is_file() and (tmp_path / "care" / "model.safetensors").is_file()
    _assert_same_outputs(authors, tmp_path / "care")


@pytest.fixture
def pickled_authors_file(tmp_path, monkeypatch):
    """``torch.save(model)`` the way the authors' trainer does it: classes from their
    ``model_pase`` module and their training script's ``__main__``, which are then gone."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    authors = _authors_model(seed=3, legacy_weight_norm=True)
    # Their SpeechTextModel also pickles its RoBERTa tokenizer (a Rust-backed object).
    authors.joint_model.tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    )
    fake = types.ModuleType("model_pase")
    monkeypatch.setitem(sys.modules, "model_pase", fake)
    main_mod = sys.modules["__main__"]
    for cls, mod_name in ((AuthorsSpeechTextModel, "model_pase"), (AuthorsEmotionClassifier, "__main__")):
        monkeypatch.setattr(cls, "__module__", mod_name)
    monkeypatch.setattr(fake, "AuthorsSpeechTextModel", AuthorsSpeechTextModel, raising=False)
    monkeypatch.setattr(main_mod, "AuthorsEmotionClassifier", AuthorsEmotionClassifier, raising=False)
    src = tmp_path / "model-200000.pth"
    torch.save(authors, src)
    monkeypatch.delitem(sys.modules, "model_pase")
    monkeypatch.delattr(main_mod, "AuthorsEmotionClassifier")
    return src, authors


def test_pickled_module_refused_without_trust(pickled_authors_file, tmp_path, capsys):
    from care_superb.cli import main as cli_main

    src, _ = pickled_authors_file
    with pytest.raises(PickledObjectsError) as err:
        _convert(src, tmp_path / "care")
    msg = str(err.value)
    assert str(src) in msg and "executes code" in msg and "--trust-pickle" in msg and "trust_pickle=True" in msg
    assert not (tmp_path / "care").exists()
    with pytest.raises(SystemExit) as exit_:
        cli_main(["convert-authors", str(src), "--out", str(tmp_path / "care2")])
    assert exit_.value.code == 2 and "--trust-pickle" in capsys.readouterr().err
    assert not (tmp_path / "care2").exists()


def test_pickled_module_converts_with_trust(pickled_authors_file, tmp_path, caplog):
    src, authors = pickled_authors_file
    with caplog.at_level("INFO", logger="care_upstream.convert_authors"):
        state = read_authors_checkpoint(src, trust_pickle=True)
    # The authors' classes are not importable (and transformers' are not trusted): stand-ins.
    assert "model_pase.AuthorsSpeechTextModel: using a weights-only stand-in" in caplog.text
    assert "__main__.AuthorsEmotionClassifier: using a weights-only stand-in" in caplog.text
    assert "modeling_wavlm.WavLMEncoderLayer: using a weights-only stand-in" in caplog.text
    assert "joint_model.pos_conv.conv.weight_g" in state
    report = _convert(src, tmp_path / "care", trust_pickle=True)
    assert report.ok
    _assert_same_outputs(authors, tmp_path / "care")


def test_cli_main(tmp_path, capsys):
    authors = _authors_model(seed=5)
    torch.save(authors.state_dict(), tmp_path / "sd.pt")
    (tmp_path / "wavlm.json").write_text(__import__("json").dumps(TINY.wavlm))
    (tmp_path / "text.json").write_text(__import__("json").dumps(TINY.text))
    from care_superb.cli import main as cli_main

    cli_main(["convert-authors", str(tmp_path / "sd.pt"), "--out", str(tmp_path / "out"),
              "--wavlm-config", str(tmp_path / "wavlm.json"), "--text-config", str(tmp_path / "text.json")])
    assert "0 missing, 0 unexpected" in capsys.readouterr().out
    _assert_same_outputs(authors, tmp_path / "out")


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="absent.pth: no such file"):
        _convert(tmp_path / "absent.pth", tmp_path / "o")

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="junk.pth: not a readable torch checkpoint"):
        _convert(junk, tmp_path / "o")

    good = tmp_path / "good.pth"
    torch.save(_authors_model().state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        _convert(truncated, tmp_path / "o")

    state = torch.load(good, weights_only=True)
    foreign = dict(state, **{"joint_model.new_block.weight": torch.zeros(1)})
    torch.save(foreign, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="foreign.pth.*new_block"):
        _convert(tmp_path / "foreign.pth", tmp_path / "o")

    partial = {k: v for k, v in state.items() if k != "joint_model.upblock.4.weight"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing.*semantic\.up\.4\.weight"):
        _convert(tmp_path / "partial.pth", tmp_path / "o")

    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(CheckpointError, match="nostate.pth: no state dict"):
        _convert(tmp_path / "nostate.pth", tmp_path / "o")

    # A WavLM-large sized config cannot hold these tensors: shape mismatch, named.
    big = dict(TINY.wavlm, hidden_size=64, num_attention_heads=4)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        convert_authors_checkpoint(good, tmp_path / "o", wavlm_config=big, text_config=TINY.text)
    assert not (tmp_path / "o").exists()
