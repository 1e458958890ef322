"""Variant-building pipelines (`zoo build PIPELINE.yaml`): the file's model (`spec`), the
checks and runs (`run`), the steps run in process (`steps`: eval, select, push) and their
report (`report`)."""
from .run import check, plan, run_pipeline
from .spec import Pipeline, Step, StepInput, StepResult

__all__ = ["Pipeline", "Step", "StepInput", "StepResult", "check", "plan", "run_pipeline"]
