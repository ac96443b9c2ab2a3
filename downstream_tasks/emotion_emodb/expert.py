from downstream_tasks.expert import DownstreamExpert  # noqa: F401  (s3prl imports <task>.expert)
