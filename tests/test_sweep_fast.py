"""The two facts the fast path rests on, checked without any training:
1. iterating a loader's batch sampler over indices draws the same random numbers as the loader;
2. with a zero-padding upstream, the stock runner's mean over a padded batch is what the production
   replay (`replay_padded_means`, pad_mode "zero") makes of the cached solo means, and with layer
   weights the mix commutes."""

import torch
from torch.utils.data import DataLoader, Dataset

from sweep.cache import time_means
from sweep.fast_probe import CachedFeaturizer, index_batches, replay_padded_means

RATE = 320


class _Items(Dataset):
    def __len__(self):
        return 23

    def __getitem__(self, i):
        return i


def _collect(dl):
    return [list(b) for b in dl]


def test_index_batches_replay_shuffle_and_rng():
    gen = torch.Generator().manual_seed(7)
    stock = DataLoader(_Items(), batch_size=5, shuffle=True, generator=gen, collate_fn=list)
    torch.manual_seed(1)
    expected = _collect(stock)
    after_stock = torch.get_rng_state()

    gen = torch.Generator().manual_seed(7)
    again = DataLoader(_Items(), batch_size=5, shuffle=True, generator=gen, collate_fn=list)
    torch.manual_seed(1)
    assert _collect(index_batches(again)) == expected
    assert torch.equal(torch.get_rng_state(), after_stock)

    # no generator (the eval loaders): the global generator is drawn from, once per iterator
    torch.manual_seed(2)
    _collect(DataLoader(_Items(), batch_size=4, collate_fn=list))
    after_eval = torch.get_rng_state()
    torch.manual_seed(2)
    _collect(index_batches(DataLoader(_Items(), batch_size=4, collate_fn=list)))
    assert torch.equal(torch.get_rng_state(), after_eval)
    torch.manual_seed(2)
    assert not torch.equal(torch.get_rng_state(), after_eval)  # the check above can fail


def _zero_pad_upstream(wavs):
    """Two layers of framewise features; fewer frames than round(len / RATE); padding frames zero."""
    lengths = [w.numel() for w in wavs]
    batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    T = batch.shape[1] // RATE
    frames = batch[:, : T * RATE].view(len(wavs), T, RATE)
    h1 = torch.stack([frames.mean(-1), frames.abs().max(-1).values, frames[..., 0]], dim=-1)
    h2 = torch.tanh(3 * h1) + 0.5
    valid = torch.arange(T)[None, :] < torch.tensor([n // RATE for n in lengths])[:, None]
    return [h * valid[..., None] for h in (h1, h2)]


def test_zero_pad_replay_matches_stock_featurizer():
    torch.manual_seed(0)
    wavs = [torch.randn(n) for n in (16000, 17000, 23999, 30000)]
    weights = torch.randn(2)
    # stock: Featurizer weighted sum per frame, tolist keeps round(len / rate) frames, then the mean
    hs = _zero_pad_upstream(wavs)
    mixed = (torch.softmax(weights, 0)[:, None, None, None] * torch.stack(hs)).sum(0)
    stock = torch.stack([mixed[i, : round(w.numel() / RATE)].mean(0) for i, w in enumerate(wavs)])
    # fast: each utterance alone -> cache, then the replay of the padded batch
    cached = [time_means(_zero_pad_upstream([w]), w.numel(), RATE) for w in wavs]
    solo = torch.stack([p.means for p in cached])
    frames = [(p.used, p.produced, w.numel()) for p, w in zip(cached, wavs)]
    means = replay_padded_means(solo, frames, RATE, "zero")
    assert replay_padded_means(solo, frames, RATE, "alone") is solo
    feat = CachedFeaturizer(2)
    with torch.no_grad():
        feat.weights.copy_(weights)
        fast = torch.cat(feat(means))
    torch.testing.assert_close(fast, stock, rtol=1e-5, atol=1e-6)
    # without the replay ("alone") the shorter utterances differ: the check is not vacuous
    alone = torch.cat(feat(solo))
    assert not torch.allclose(alone, stock, rtol=1e-4, atol=1e-5)
