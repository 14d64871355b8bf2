"""Tables written beside an output: evaluate's per-section CSV, which the report reads."""

from __future__ import annotations

import os
from pathlib import Path

SECTION_FIELDS = ["section", "pixel_error", "rand_error", "rand_split", "rand_merge", "info_error",
                  "variation_of_information", "warping_error", "membrane_dice", "membrane_jaccard"]


def sections_table_path(output: str | os.PathLike) -> Path:
    """The per-section CSV written beside metrics.json."""
    output = Path(output)
    return output.with_name(output.stem + "_sections.csv")
