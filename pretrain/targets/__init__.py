"""Teacher targets for CARE pre-training (SPEC §3).

``care-pretrain targets`` turns a folder (or list) of audio files into a cache of per-utterance
targets: a semantic vector (Whisper transcript -> text encoder, mean-pooled) and a 50 Hz acoustic
matrix (PASE+ or eGeMAPS, normalised per utterance). ``TargetStore`` reads the cache back.
"""

from pretrain.targets.frames import care_frame_count
from pretrain.targets.store import TargetStore, TargetStoreError, merge_index

__all__ = ["TargetStore", "TargetStoreError", "care_frame_count", "merge_index"]
