"""s3prl task package `sentiment_mosi`: CMU-MOSI, 2 classes, SDK standard folds (vary the seed for 5 runs). The expert is shared."""
