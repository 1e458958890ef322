"""The params of `merge.moe`: the mergekit-moe config with each model replaced by its
position among the run's inputs. The checks mergekit makes before any work
(`mergekit/moe/config.py: is_bad_config`) are made here, so a pipeline or API call is
refused the same way as the YAML, before any input is read."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from zoo.param_types import CheckedParams, custom, number
from zoo.registry import OperatorParams

from ..spec import FloatDtype

GateMode = Literal["hidden", "hidden_avg", "hidden_last", "cheap_embed", "random", "uniform_random"]
GATE_MODES: tuple[str, ...] = GateMode.__args__  # type: ignore[attr-defined]
RANDOM_MODES = ("random", "uniform_random")  # gates drawn at random: no prompts needed


class ExpertParams(CheckedParams):
    """One expert: the dense model whose MLPs it takes, and the prompts that route to it."""

    model_config = {"extra": "forbid", "frozen": True}
    input: int = Field(ge=0, description="position of the expert's model among the run's inputs")
    positive_prompts: list[str] = Field(default_factory=list, description="prompts to route to this expert")
    negative_prompts: list[str] = Field(default_factory=list, description="prompts to route away from it")
    noise_scale: number(ge=0, le=1e6) | None = Field(None, description="add N(0, noise_scale^2) noise to its MLP "
                                                                       "weights (seeded)")
    residual_scale: number(ge=-1e6, le=1e6) | None = Field(None, description="scale its down_proj (w2) by this")


class MoeParams(OperatorParams):
    """mergekit-moe's settings (gate_mode, experts_per_token, dtype, experts with prompts)."""

    model_config = {"json_schema_extra": {"examples": [
        {"gate_mode": "random", "experts": [{"input": 1}, {"input": 2}]}]}}
    experts: list[ExpertParams] = Field(min_length=1, description="the experts, in output order")
    gate_mode: GateMode = Field("hidden", description="how the router rows are made: hidden states of the base on "
                                "the prompts (hidden: last token; hidden_avg: mean over tokens), token "
                                "embeddings (cheap_embed), or random")
    experts_per_token: int = Field(2, ge=1, le=1024, description="experts each token is routed to (top-k)")
    dtype: FloatDtype | None = Field(None, description="output dtype [default: the base's config dtype]")
    seed: int = Field(0, description="seed for random gates and expert noise (mergekit-moe's --random-seed)")
    allow_all_same: bool = Field(False, description="build it even when every expert is the same model "
                                 "(useful only to train it afterwards)")
    max_shard_size: str = Field("5GB", min_length=1, description="output shard size")

    @model_validator(mode="after")
    def _check(self) -> "MoeParams":
        n = len(self.experts)
        if self.experts_per_token > n:
            raise custom(f"experts_per_token is {self.experts_per_token} but there are only {n} expert(s): give at "
                         "least as many experts as experts_per_token")
        if self.gate_mode in RANDOM_MODES:
            return self
        for i, e in enumerate(self.experts):
            if not e.positive_prompts:
                raise custom(f"experts[{i}] has no positive_prompts: gate_mode {self.gate_mode} routes by prompts, so "
                             "give each expert positive_prompts (or use gate_mode: random)")
        first = (self.experts[0].positive_prompts, self.experts[0].negative_prompts)
        if all((e.positive_prompts, e.negative_prompts) == first for e in self.experts[1:]):
            raise custom("every expert has the same positive and negative prompts, so the router cannot tell them "
                         "apart: give each expert prompts of what it should receive")
        if not self.allow_all_same and n > 1 and len({e.input for e in self.experts}) == 1:
            raise custom("every expert is the same model: the MoE would compute what that model does at a larger "
                         "cost; to build it anyway (to train it afterwards) pass "
                         "--i-understand-this-is-not-useful-without-training")
        return self
