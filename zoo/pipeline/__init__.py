"""Variant-building pipelines (`zoo build PIPELINE.yaml`): the file's model (`spec`), the
checks and runs (`run`), the `--dry-run` plan (`plan`), the steps run in process (`steps`:
eval, select, push) and their report (`report`)."""
from .plan import plan
from .run import check, run_pipeline
from .spec import Pipeline, Step, StepInput, StepResult

__all__ = ["Pipeline", "Step", "StepInput", "StepResult", "check", "plan", "run_pipeline"]
