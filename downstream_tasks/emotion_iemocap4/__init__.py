"""s3prl task package `emotion_iemocap4`: IEMOCAP, 4 classes (happy+excited), leave-one-session-out, 5 folds. The expert is shared."""
