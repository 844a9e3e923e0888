"""Loaders for the benchmark datasets in the data folder (in progress)."""
from __future__ import annotations
LOG_SYSTEMS = ("Android", "Apache", "BGL", "HPC", "Hadoop", "HealthApp", "Linux", "OpenSSH",
               "Proxifier", "Spark", "Windows", "Zookeeper")
ROUTERBENCH_TASKS = ("arc_challenge", "mbpp", "winograde")
def load_logparsing(**kw): raise NotImplementedError
def load_routerbench(**kw): raise NotImplementedError
def load_routellm(**kw): raise NotImplementedError
