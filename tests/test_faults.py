"""Fault injection: every entry point meets the bad input of `tests/faults.py`.

The rule each section checks: every file a command finds is used or listed with its reason; every
cache or shard read back is verified, keys included; every error names the file and the problem in
one sentence, without a traceback for expected bad input; nothing finished is lost.

One section per entry point; append new cases to the section of the command they exercise.
"""

from __future__ import annotations

import faults  # noqa: F401  (builders used by the sections below)

# ------------------------------------------------------------------ care_core (decoder, atomic writes)

# ------------------------------------------------------------------ care-superb prepare

# ------------------------------------------------------------------ upstream loading (run_downstream.py, -k, sweep)

# ------------------------------------------------------------------ care-superb register-s3prl

# ------------------------------------------------------------------ care-pretrain targets

# ------------------------------------------------------------------ care-superb sweep (cache)

# ------------------------------------------------------------------ care-superb predict / extract
