"""Teacher targets for CARE pre-training: what the two encoders learn to predict.

``care-pretrain targets`` turns a folder (or list) of audio files into a cache of per-utterance
targets: a semantic vector (Whisper transcript -> text encoder, mean-pooled; the semantic encoder's
target) and a 50 Hz acoustic matrix (PASE+ as in the paper, or eGeMAPS as in its ablation,
normalised per utterance; the acoustic encoder's target). ``TargetStore`` reads the cache back,
checking each shard's checksum first.
"""

from pretrain.targets.frames import care_frame_count
from pretrain.targets.store import TargetStore, TargetStoreError, merge_index

__all__ = ["TargetStore", "TargetStoreError", "care_frame_count", "merge_index"]
