"""Parameter counts of the CARE variants at full size, built from the config alone (no download)."""

from __future__ import annotations

import argparse
from typing import Dict, List, Optional

from care_core.constants import VARIANTS
PAPER_MILLIONS = {"care": 160, "care_acoustic": 94, "care_semantic": 110}


def count_parameters() -> Dict[str, int]:
    from care_upstream.config import CareConfig
    from care_upstream.model import CARE

    model = CARE(CareConfig.base())
    return {variant: model.num_parameters(variant) for variant in VARIANTS}


def main(argv: Optional[List[str]] = None) -> None:
    argparse.ArgumentParser(prog="care-superb params", description=__doc__).parse_args(argv)
    counts = count_parameters()
    print("| variant | parameters (this implementation) | paper |")
    print("|---|---|---|")
    for variant, n in counts.items():
        print(f"| {variant} | {n / 1e6:.1f} M | ~{PAPER_MILLIONS[variant]} M |")
