"""Fault injection: every entry point meets the bad input of `tests/faults.py`.

The rule each section checks: every file a command finds is used or listed with its reason; every
cache or shard read back is verified, keys included; every error names the file and the problem in
one sentence, without a traceback for expected bad input; nothing finished is lost.

One section per entry point; append new cases to the section of the command they exercise.
"""

from __future__ import annotations

import faults  # noqa: F401  (builders used by the sections below)

# ------------------------------------------------------------------ care_core (decoder, atomic writes)

import pytest  # noqa: E402
import torch  # noqa: E402

from care_core.audio import AudioError, check_usable, read_mono  # noqa: E402


def test_decoder_refuses_a_truncated_wav_naming_it(tmp_path):
    path = faults.truncated_wav(tmp_path / "cut.wav")
    with pytest.raises(AudioError, match="cut.wav: truncated") as err:
        read_mono(path)
    assert err.value.reason == "truncated"
    assert read_mono(faults.good_wav(tmp_path / "whole.wav"))[0].shape == (16000,)


@pytest.mark.parametrize("build,reason", [(faults.silent_wav, "silent"), (faults.one_sample_wav, "too_short")])
def test_check_usable_is_the_one_rule(tmp_path, build, reason):
    path = build(tmp_path / "x.wav")
    wav, _, _ = read_mono(path)
    with pytest.raises(AudioError, match="x.wav: ") as err:
        check_usable(wav, path)
    assert err.value.reason == reason
    check_usable(read_mono(faults.good_wav(tmp_path / "ok.wav"))[0], tmp_path / "ok.wav")
    with pytest.raises(AudioError, match="too short"):
        check_usable(torch.full((399,), 0.5), "y.wav")


@pytest.mark.parametrize("build", [faults.garbage_file, faults.empty_file, faults.dangling_symlink,
                                   faults.symlink_loop])
def test_decoder_names_unreadable_files(tmp_path, build):
    path = build(tmp_path / "bad.wav")
    with pytest.raises(AudioError, match="bad.wav: ") as err:
        read_mono(path)
    assert err.value.reason in ("unreadable", "empty")

# ------------------------------------------------------------------ care-superb prepare

# ------------------------------------------------------------------ upstream loading (run_downstream.py, -k, sweep)

# ------------------------------------------------------------------ care-superb register-s3prl

# ------------------------------------------------------------------ care-pretrain targets

# ------------------------------------------------------------------ care-superb sweep (cache)

# ------------------------------------------------------------------ care-superb predict / extract
