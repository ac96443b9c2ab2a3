"""s3prl task package `emotion_emodb`: EmoDB, 7 classes, 5 folds of 6/2/2 speakers. The expert is shared."""
