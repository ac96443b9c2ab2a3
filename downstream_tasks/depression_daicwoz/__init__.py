"""s3prl task package `depression_daicwoz`: DAIC-WOZ, PHQ-8 binary, 10 s segments; test = dev (the paper reports dev). The expert is shared."""
