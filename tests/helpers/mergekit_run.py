"""Run mergekit (0.1.5) in process on a configuration document, as the tests compare against it."""
from __future__ import annotations

from pathlib import Path


def mergekit_merge(doc: dict, out: Path):
    """mergekit's run_merge on `doc` (a parsed YAML) into `out`; returns the result as a Checkpoint."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    from zoo import Checkpoint

    run_merge(MergeConfiguration.model_validate(doc), str(out),
              options=MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False))
    return Checkpoint.open(out)
