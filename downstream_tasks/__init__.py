"""The paper's emotion, sentiment and depression tasks as s3prl downstream tasks."""
