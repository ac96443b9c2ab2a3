"""s3prl task package `emotion_cafe`: CaFE, 7 classes, 5 folds of 8/2/2 speakers. The expert is shared."""
