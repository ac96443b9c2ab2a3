"""s3prl task package `emotion_ravdess_song`: RAVDESS song, 6 classes, 5 folds of 16/3/4 singers. The expert is shared."""
