"""The job scripts as tests use them: the module, and a command line -> its config."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def deprune_job():
    spec = importlib.util.spec_from_file_location("deprune_job", ROOT / "jobs" / "deprune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


def job_config(command: str):
    """The ClusterConfig of ``python jobs/deprune.py ARGS`` exactly as the job parses it."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "jobs/deprune.py"], argv
    job = deprune_job()
    return job.config_from_argv(job.parser(), argv[2:])
