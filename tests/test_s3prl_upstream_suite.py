"""s3prl's own upstream test suite (``test/test_upstream.py`` of s3prl 0.4.18) run on the tiny CARE.

That file is not part of the s3prl wheel, so its checks are restated here one for one, through the
same public API it uses (``s3prl.nn.S3PRLUpstream``, ``s3prl.nn.Featurizer`` and
``s3prl.util.pseudo_data.get_pseudo_wavs``), with its constants. What is left out is only the
comparison with s3prl's pre-extracted hidden states, which exist for stock upstreams alone:

* ``_test_specific_upstream``: forward + backward (under anomaly detection) at 0.05 s with n = 1
  and n = 2, and 0.05 s to 1 s with n = 3;
* ``_compare_with_extracted`` minus the ground truth: deterministic states in eval mode, a
  deterministic number of layers in eval and in train mode;
* ``test_featurizer``: Featurizer with layer_selections None / [0, 4, 9] and normalize off / on;
* ``test_upstream_properties``.

Each CARE variant is registered on ``s3prl.hub`` first, as ``run_downstream.py`` does.
"""

import pytest
import torch

from s3prl.nn import Featurizer, S3PRLUpstream
from s3prl.util.pseudo_data import get_pseudo_wavs

from care_superb.s3prl_registry import register

torch.set_num_threads(1)  # tiny model: extra threads only contend on a shared machine
# s3prl test/test_upstream.py constants
TEST_MORE_ITER = 2
TRAIN_MORE_ITER = 5
EXTRA_SHORT_SEC = 0.05

NAME = "care_random_tiny"


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register()


@pytest.fixture(scope="module")
def upstream():
    return S3PRLUpstream(NAME)


def _extract_feat(model: S3PRLUpstream, seed: int = 0, **pseudo_wavs_args):
    wavs, wavs_len = get_pseudo_wavs(seed=seed, padded=True, **pseudo_wavs_args)
    all_hs, all_lens = model(wavs, wavs_len)
    return all_hs


def _test_forward_backward(name: str, **pseudo_wavs_args):
    with torch.autograd.set_detect_anomaly(True):
        model = S3PRLUpstream(name)
        hs = _extract_feat(model, **pseudo_wavs_args)
        h_sum = torch.zeros(1)
        for h in hs:
            h_sum = h_sum + h.sum()
        h_sum.backward()
    return model, hs


@pytest.mark.parametrize("n, min_secs, max_secs", [(1, EXTRA_SHORT_SEC, EXTRA_SHORT_SEC),
                                                  (2, EXTRA_SHORT_SEC, EXTRA_SHORT_SEC),
                                                  (3, EXTRA_SHORT_SEC, 1)])
def test_forward_backward(n, min_secs, max_secs):
    model, hs = _test_forward_backward(NAME, min_secs=min_secs, max_secs=max_secs, n=n)
    assert len(hs) == 13 and all(h.shape[0] == n and torch.isfinite(h).all() for h in hs)
    # the gradient reached trainable CARE weights (the front end is frozen by design)
    grads = [p.grad for p in model.upstream.model.common.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("variant", ["care", "care_acoustic", "care_semantic"])
def test_forward_backward_every_variant_at_0_05_s(variant, tmp_path):
    """The same 0.05 s check through the checkpoint entries (-u care / care_acoustic / care_semantic)."""
    from care_upstream.config import CareConfig
    from care_upstream.model import CARE

    torch.manual_seed(0)
    ckpt = CARE(CareConfig.tiny()).save_pretrained(tmp_path / "care")
    with torch.autograd.set_detect_anomaly(True):
        model = S3PRLUpstream(variant, path_or_url=str(ckpt))
        hs = _extract_feat(model, min_secs=EXTRA_SHORT_SEC, max_secs=EXTRA_SHORT_SEC, n=2)
        sum(h.sum() for h in hs).backward()
    assert len(hs) == 13


def test_deterministic_in_eval_and_layer_count_in_train():
    model = S3PRLUpstream(NAME)
    model.eval()
    with torch.no_grad():
        hs = _extract_feat(model)
        for _ in range(TEST_MORE_ITER):
            more_hs = _extract_feat(model)
            for h1, h2 in zip(hs, more_hs):
                assert torch.allclose(h1, h2), "should have deterministic representation in eval mode"
        for i in range(TEST_MORE_ITER):
            more_hs = _extract_feat(model, seed=i + 1)
            assert len(hs) == len(more_hs), "should have deterministic num_layer in eval mode"
    model.train()
    for i in range(TRAIN_MORE_ITER):
        more_hs = _extract_feat(model, seed=i + 1)
        assert len(hs) == len(more_hs), "should have deterministic num_layer in train mode"


@pytest.mark.parametrize("layer_selections", [None, [0, 4, 9]])
@pytest.mark.parametrize("normalize", [False, True])
def test_featurizer(upstream, layer_selections, normalize):
    model = upstream
    featurizer = Featurizer(model, layer_selections=layer_selections, normalize=normalize)
    wavs, wavs_len = get_pseudo_wavs(padded=True)
    all_hs, all_lens = model(wavs, wavs_len)
    hs, hs_len = featurizer(all_hs, all_lens)
    assert isinstance(hs, torch.FloatTensor)
    assert isinstance(hs_len, torch.LongTensor)


def test_upstream_properties(upstream):
    model = upstream
    featurizer = Featurizer(model)
    assert isinstance(model.hidden_sizes, (tuple, list)) and isinstance(model.hidden_sizes[0], int)
    assert isinstance(model.downsample_rates, (tuple, list)) and isinstance(model.downsample_rates[0], int)
    assert isinstance(featurizer.output_size, int)
    assert isinstance(featurizer.downsample_rate, int)
    assert model.num_layers == 13 and model.downsample_rates == [320] * 13
