"""The project's leaf layer: constants, atomic writes, the one audio decoder and the segment codec.

Every other package (`care_upstream`, `downstream_tasks`, `pretrain`, `sweep`, `care_superb`)
imports from here; this package imports nothing else of the project, so the upstream model can be
used without the CLI and the CLI can change without touching what the model depends on.
"""

from care_core.constants import SAMPLE_RATE, VARIANTS

__all__ = ["SAMPLE_RATE", "VARIANTS"]
