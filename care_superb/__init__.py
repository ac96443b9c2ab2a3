"""Glue between this project and s3prl: registration of the CARE upstreams and the emotion tasks, and the CLI."""

__all__ = ["EmotionClassifier"]


def __getattr__(name):
    # Lazy: `import care_superb` stays light (no torch/s3prl) until the classifier is asked for.
    if name == "EmotionClassifier":
        from care_superb.classifier import EmotionClassifier

        return EmotionClassifier
    raise AttributeError(f"module 'care_superb' has no attribute {name!r}")
