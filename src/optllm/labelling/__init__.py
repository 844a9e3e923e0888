"""Labelling: send a sample to every candidate model and score the answers (`optllm label`)."""
from optllm.labelling.label import LABEL_COLUMNS, LabelReport, label, load_rubric, read_references, work_dir_for
from optllm.labelling.scorers import DEFAULT_SCORER, JUDGE_RUBRIC, SCORERS, Scorer, parse_scorer

__all__ = ["DEFAULT_SCORER", "JUDGE_RUBRIC", "LABEL_COLUMNS", "LabelReport", "SCORERS", "Scorer", "label",
           "load_rubric", "parse_scorer", "read_references", "work_dir_for"]
