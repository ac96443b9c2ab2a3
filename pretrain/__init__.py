"""CARE pre-training: teacher targets (`pretrain.targets`), data, trainer and export (SPEC §3)."""
