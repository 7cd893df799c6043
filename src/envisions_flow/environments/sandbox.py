"""Run model-written Python in isolated child processes, from warm workers.

`fork_server` is what runs in a worker and in each program's child (the isolation itself:
session, own directory, rlimits, audit hook, no network); this module is the caller's side:
the limits, the outcomes, and the pool of worker processes that batches go to.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator, Sequence

from envisions_flow.environments import fork_server
from envisions_flow.environments.fork_server import FORBIDDEN, MEMORY, RUNTIME, SYNTAX, TIMEOUT

__all__ = ["FORBIDDEN", "MEMORY", "RUNTIME", "SYNTAX", "TIMEOUT", "Limits", "Outcome", "SandboxPool",
           "SandboxWorkerError", "run_many", "run_program"]


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program."""

    timeout_s: float = 2.0
    memory_mb: int = 1024
    max_file_mb: int = 16


@dataclass(frozen=True)
class Outcome:
    """What a sandboxed program did: its rendered return value or why it has none.

    `kind` says what the value was (fork_server.NUMBER, STRING, CONTAINER, ...; "" without one).
    """

    value: str | None
    error_class: str
    error: str
    duration_s: float
    kind: str = ""


def _private_root() -> str:
    """A private directory for program directories, removed when this process exits."""
    root = tempfile.mkdtemp(prefix="envisions-sandbox-")
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(root, ignore_errors=True))
    return root


def run_program(code: str, entry: str = "solution()", limits: Limits = Limits()) -> Outcome:
    """Run `code`, then evaluate `entry` in its namespace, in a child forked from this very process."""
    if not fork_server.has_root():
        fork_server.use_root(_private_root())
    child_limits = fork_server.rlimits(limits.timeout_s, fork_server.address_space_limit(limits.memory_mb),
                                       limits.max_file_mb)
    return Outcome(*fork_server.run(code, entry, limits.timeout_s, child_limits))


class SandboxWorkerError(RuntimeError):
    """A warm worker process died (killed from outside: programs themselves only ever kill their own child)."""


class _Worker:
    """One warm worker process and its request/reply pipes."""

    def __init__(self, preload: Sequence[str]) -> None:
        import subprocess

        self.root = tempfile.mkdtemp(prefix="envisions-sandbox-")
        command = f"from envisions_flow.environments.fork_server import serve; serve({list(preload)!r}, {self.root!r})"
        # Programs never see the caller's environment (API keys, tokens): the worker starts without it.
        environment = {name: os.environ[name] for name in ("PYTHONPATH", "TMPDIR", "LANG") if name in os.environ}
        self.process = subprocess.Popen([sys.executable, "-c", command], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=environment, start_new_session=True)

    def run(self, batch: list[tuple[str, str]], limits: Limits) -> list[Outcome]:
        request = json.dumps({"programs": batch, "limits": asdict(limits)}).encode() + b"\n"
        try:
            self.process.stdin.write(request)
            self.process.stdin.flush()
            reply = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            reply = b""
        if not reply:
            raise SandboxWorkerError(f"sandbox worker {self.process.pid} died (exit status {self.process.poll()})")
        return [Outcome(*fields) for fields in json.loads(reply)]

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=5)
        except Exception:  # noqa: BLE001 - a stuck or dead worker is killed below either way
            pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        shutil.rmtree(self.root, ignore_errors=True)


class SandboxPool:
    """Warm worker processes, each forking one isolated child per program; batches go to whichever is free."""

    def __init__(self, workers: int, limits: Limits, chunk_size: int = 16, preload: Sequence[str] = ()) -> None:
        import queue
        from concurrent.futures import ThreadPoolExecutor

        self.limits = limits
        self.chunk_size = chunk_size
        self._workers = [_Worker(preload) for _ in range(max(1, workers))]
        self._idle: queue.Queue[_Worker] = queue.Queue()
        for worker in self._workers:
            self._idle.put(worker)
        self._threads = ThreadPoolExecutor(len(self._workers))

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        for worker in self._workers:
            worker.close()
        self._threads.shutdown(wait=True)

    def _run(self, batch: list[tuple[str, str]]) -> list[Outcome]:
        worker = self._idle.get()
        try:
            return worker.run(batch, self.limits)
        finally:
            self._idle.put(worker)

    def map(self, programs: Sequence[tuple[str, str]], progress: bool = False) -> Iterator[Outcome]:
        """Run (code, entry) pairs, yielding outcomes in order as batches finish."""
        from tqdm import tqdm

        batches = [list(programs[i : i + self.chunk_size]) for i in range(0, len(programs), self.chunk_size)]
        futures = [self._threads.submit(self._run, batch) for batch in batches]
        with tqdm(total=len(programs), desc="executing", unit="prog", disable=not progress) as bar:
            for future in futures:
                for outcome in future.result():
                    bar.update()
                    yield outcome


def run_many(programs: Iterable[tuple[str, str]], limits: Limits, workers: int, progress: bool = False,
             preload: Sequence[str] = ()) -> list[Outcome]:
    """Convenience wrapper: run all programs in a fresh pool."""
    with SandboxPool(workers, limits, preload=preload) as pool:
        return list(pool.map(list(programs), progress))
