"""The resource limits of a program's child: address space, CPU time, file size, no core dumps.

Worked out in the worker before each fork, so the child only makes the system calls. Imported by the
sandbox's worker (`fork_server`): standard library only.
"""

from __future__ import annotations

import functools
import math
import os
import resource


@functools.cache
def open_statm() -> int | None:
    """/proc/self/statm, kept open: a worker reads it after it confined itself to where it may read."""
    try:
        return os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def address_space_limit(memory_mb: int) -> int:
    """RLIMIT_AS for `memory_mb` more than this process already maps.

    RLIMIT_AS caps the whole address space, inherited mappings included: a child forked
    from a process with torch loaded (gigabytes of reserved address space) could not
    allocate anything under a plain 1 GB cap.
    """
    try:
        mapped = int(os.pread(open_statm(), 100, 0).split()[0]) * resource.getpagesize()
    except (OSError, TypeError, ValueError, IndexError):
        mapped = 0
    return mapped + memory_mb * 1024 * 1024


def rlimits(timeout_s: float, memory: int, max_file_mb: int) -> list[tuple[int, tuple[int, int]]]:
    """A child's rlimits, worked out before the fork so that the child only makes the system calls.

    `memory` is the address-space cap in bytes (see `address_space_limit`).
    """
    cpu = max(1, math.ceil(timeout_s)) + 1
    file_size = max_file_mb * 1024 * 1024
    return [(resource.RLIMIT_AS, (memory, memory)), (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_FSIZE, (file_size, file_size)), (resource.RLIMIT_CORE, (0, 0))]
