#!/usr/bin/env python
"""s3prl's own downstream runner, with the CARE upstreams and this project's tasks registered.

Every flag goes to s3prl unchanged (`-m`, `-u`, `-k`, `-d`, `-c`, `-o`, `-n`, `-p`, `-e`, ...); see
`python run_downstream.py -h`. Only two defaults are filled in, and both are printed when used:
- `-c`: s3prl looks for `./downstream/<task>/config.yaml` relative to the working directory; here a
  project task gets `downstream_tasks/<task>/config.yaml` and a stock task its config inside the
  installed s3prl package.
- `--device cpu` when no CUDA device exists (s3prl defaults to cuda).
An unknown `-u` name (with the close names) and an upstream that cannot be built from `-k` (missing
or damaged weights, a bad config.json) stop with one sentence and exit status 2, no traceback.
"""

import sys

from care_superb.launcher import main

if __name__ == "__main__":
    main(sys.argv[1:])
