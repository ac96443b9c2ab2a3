"""CARE as an s3prl upstream: config, model, and the s3prl expert / hub entries."""

from .config import CareConfig
from .model import CARE, CareOutput, build_care

__all__ = ["CARE", "CareConfig", "CareOutput", "build_care"]
