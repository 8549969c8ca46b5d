"""A fix for snakemake-executor-plugin-slurm 2.8.0: failed job states that carry a suffix.

``sacct`` reports a job cancelled by a user as ``CANCELLED by <uid>`` (and a state cut to its
column width with a trailing ``+``). Plugin 2.8.0 compares the state with its list of failed
states exactly, finds no match, and keeps polling a job that no longer exists: the workflow
waits forever with an empty queue. This module wraps the plugin's status query so that every
state is reduced to its first word (``CANCELLED by 0`` -> ``CANCELLED``), which the plugin then
reports as a failed job, naming the rule, the Slurm job id and its log.

It is applied by the Snakefile, only to the plugin version it was written for
(:data:`FIXED_VERSIONS`); with any other version it does nothing and says so once, so it is
easy to drop when the plugin matches states itself.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import sys

#: Plugin versions whose state matching this module fixes.
FIXED_VERSIONS = ("2.8.0",)
_STATE = re.compile(r"[A-Z_]+")


def normalise_state(state: str) -> str:
    """The Slurm job state without what follows it: ``CANCELLED by 0`` -> ``CANCELLED``."""
    match = _STATE.match(state.strip())
    return match.group(0) if match else state.strip()


def apply() -> bool:
    """Wrap the plugin's status query (see the module docstring); True when applied."""
    try:
        version = importlib.metadata.version("snakemake-executor-plugin-slurm")
    except importlib.metadata.PackageNotFoundError:
        return False
    if version not in FIXED_VERSIONS:
        sys.stderr.write(
            f"thighct: snakemake-executor-plugin-slurm {version} is not one that "
            f"workflow/slurm_compat.py fixes ({', '.join(FIXED_VERSIONS)}); check that a "
            "cancelled job (scancel) fails the run, or drop the fix\n"
        )
        return False
    import snakemake_executor_plugin_slurm as plugin

    query = getattr(plugin, "query_job_status", None)
    if query is None or getattr(query, "_thighct_normalised", False):
        return query is not None

    @functools.wraps(query)
    async def normalised(command, logger):
        states, duration = await query(command, logger)
        if states is not None:
            states = {job: normalise_state(state) for job, state in states.items()}
        return states, duration

    normalised._thighct_normalised = True
    plugin.query_job_status = normalised
    return True
