"""s3prl task package `emotion_mspimprov`: MSP-IMPROV, valence/arousal/dominance regression, 12 folds (test = one speaker). The expert is shared."""
