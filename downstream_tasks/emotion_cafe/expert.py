"""s3prl imports `s3prl.downstream.<task>.expert`; every task shares one expert."""

from downstream_tasks.expert import DownstreamExpert

__all__ = ["DownstreamExpert"]
