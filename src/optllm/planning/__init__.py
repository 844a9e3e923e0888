"""Planning: from a labelled sample and the queries to assign (a dataset's split, or a user's
prompts with a catalogue) to a certified plan. `plan_queries` is the one pass every path
runs; `build_plan` / `write_plan` / `read_plan` are the plan folder of `optllm plan`.
"""
from optllm.planning.core import PlanSettings, Planned, cross_fit, plan_queries
from optllm.planning.plan import (PLAN_FILES, LabelledSample, Plan, PlanItem, build_plan, labelled_sample, output_tokens_of, read_plan,
                                  staircase_fallbacks, write_plan)
from optllm.planning.prompts import id_str, read_prompts, write_prompts

__all__ = ["PlanSettings", "Planned", "cross_fit", "plan_queries", "Plan", "PlanItem", "LabelledSample",
           "PLAN_FILES", "build_plan", "labelled_sample", "output_tokens_of", "read_plan", "staircase_fallbacks", "write_plan", "id_str",
           "read_prompts", "write_prompts"]
