"""s3prl task package `emotion_iemocap6`: IEMOCAP, 6 classes, leave-one-session-out, 5 folds. The expert is shared."""
