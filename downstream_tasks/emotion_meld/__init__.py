"""s3prl task package `emotion_meld`: MELD, 7 classes, official splits (vary the seed for 5 runs). The expert is shared."""
