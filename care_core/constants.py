"""Numbers and names every layer of the project agrees on."""

#: Every model here (CARE, WavLM, HuBERT, the teachers) sees 16 kHz mono audio.
SAMPLE_RATE = 16000

#: The three upstream views of one CARE model: both branches (1536-d states), or one branch (768-d).
VARIANTS = ("care", "care_acoustic", "care_semantic")
