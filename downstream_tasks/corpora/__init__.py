"""One small parser per corpus: raw layout in, typed `Utterance` records out (no splitting here)."""
