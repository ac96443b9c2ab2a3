"""CARE pre-training: teacher targets (`pretrain.targets`), data, trainer and export (recipe: docs/pretraining.md)."""
