"""`python -m snakemake` with the executor's job-status checks at most POLL_S seconds apart (tests only).

The Slurm plugin waits 10 s longer after every status check in which no job ended (up to 3 minutes):
right for a busy cluster, but on the one-node test cluster, whose jobs take seconds, that back-off was
two thirds of the Slurm test's time. Everything else (submission through sbatch and srun, the
profile, job states from squeue) is the real plugin's.

    python tests/slurm/quick_polls.py --profile profiles/slurm ...
"""

from __future__ import annotations

import asyncio

from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor

POLL_S = 0.5


async def _sleep(executor: RemoteExecutor) -> None:
    await asyncio.sleep(min(POLL_S, executor.next_seconds_between_status_checks or POLL_S))


RemoteExecutor.sleep = _sleep

if __name__ == "__main__":
    from snakemake.cli import main

    main()
