"""Run model-written Python in isolated child processes.

Each program runs in a child forked from a warm worker: its own session (so the
whole process group is killed afterwards), a throw-away working directory,
rlimits on address space, CPU time and file size, stdout/stderr to /dev/null,
and an audit hook that refuses process creation, signals, sockets, native code
and any file access outside the sandbox directory. Workers try to enter a new
network namespace once at start-up, so even a hook bypass finds no network.
The parent only ever receives a short string rendering of the return value;
judging it against the gold answer happens outside the sandbox.
"""

from __future__ import annotations

import json
import math
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from typing import Iterable, Iterator, Sequence

# Error classes a sandboxed run can end with ("" means it returned normally).
SYNTAX = "syntax"
RUNTIME = "runtime"
FORBIDDEN = "forbidden"
TIMEOUT = "timeout"
MEMORY = "memory"

_BLOCKED_EVENTS = (
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "signal.pthread_kill",
    "subprocess.Popen",
    "pty.spawn",
    "resource.setrlimit",
    "resource.prlimit",
    "ctypes.dlopen",
    "ctypes.dlsym",
    "ctypes.cdata",
    "os.startfile",
    "webbrowser.open",
)
_BLOCKED_PREFIXES = ("socket.", "ctypes.", "mmap.", "urllib.", "http.", "ftplib.", "smtplib.")
_PATH_EVENTS = {
    "os.remove": 0,
    "os.rename": 0,
    "os.rmdir": 0,
    "os.mkdir": 0,
    "os.symlink": 1,
    "os.link": 1,
    "os.chmod": 0,
    "os.chown": 0,
    "os.truncate": 0,
    "os.utime": 0,
    "shutil.rmtree": 0,
    "shutil.copyfile": 1,
    "shutil.move": 1,
}
# ctypes may be imported (sympy needs it); every ctypes.* audit event is refused.
_BLOCKED_MODULES = ("_posixsubprocess", "subprocess", "socket", "_socket", "multiprocessing", "pty", "cffi")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MAX_VALUE_CHARS = 1000
# Modules warm workers import once, so programs find them loaded (no import inside the sandbox).
DEFAULT_PRELOAD = ("math", "fractions", "decimal", "itertools", "functools", "collections", "statistics", "datetime", "re", "sympy")


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program."""

    timeout_s: float = 2.0
    memory_mb: int = 1024
    max_file_mb: int = 16


@dataclass(frozen=True)
class Outcome:
    """What a sandboxed program did: its rendered return value or why it has none."""

    value: str | None
    error_class: str
    error: str
    duration_s: float


def _render(value: object) -> str | None:
    """Turn a return value into a bounded string the parent can judge."""
    if value is None:
        return None
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes)):
        try:
            value = item()
        except Exception:  # noqa: BLE001 - numpy arrays of size > 1 refuse .item()
            pass
    if isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return text[:_MAX_VALUE_CHARS]


class _Guard:
    """The audit hook that keeps a child inside its directory and away from the system."""

    def __init__(self, sandbox_dir: str) -> None:
        self.sandbox_dir = os.path.realpath(sandbox_dir)
        self.read_roots = tuple(
            {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path) if p and os.path.isabs(p)}
            - {"/"}
        )
        self.violation: str | None = None
        self._busy = False

    def _inside(self, path: object, roots: tuple[str, ...]) -> bool:
        if isinstance(path, int):
            return True
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return False
        real = os.path.realpath(os.path.join(self.sandbox_dir, path))
        return any(real == root or real.startswith(root + os.sep) for root in roots)

    def _refuse(self, what: str) -> None:
        self.violation = self.violation or what
        raise PermissionError(f"sandbox: {what} is not allowed")

    def __call__(self, event: str, args: tuple) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            self._check(event, args)
        finally:
            self._busy = False

    def _check(self, event: str, args: tuple) -> None:
        if event in _BLOCKED_EVENTS or event.startswith(_BLOCKED_PREFIXES):
            self._refuse(event)
        elif event == "import" and args and str(args[0]).split(".")[0] in _BLOCKED_MODULES:
            self._refuse(f"import {args[0]}")
        elif event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            roots = (self.sandbox_dir,) if writing else (self.sandbox_dir, *self.read_roots)
            if not self._inside(path, roots):
                self._refuse(f"{'writing' if writing else 'reading'} {path!r}")
        elif event in _PATH_EVENTS:
            for path in args[: _PATH_EVENTS[event] + 1]:
                if not self._inside(path, (self.sandbox_dir,)):
                    self._refuse(f"{event} on {path!r}")


def address_space_limit(memory_mb: int) -> int:
    """RLIMIT_AS for `memory_mb` more than this process already maps.

    RLIMIT_AS caps the whole address space, inherited mappings included: a child forked
    from a process with torch loaded (gigabytes of reserved address space) could not
    allocate anything under a plain 1 GB cap.
    """
    try:
        with open("/proc/self/statm") as handle:
            mapped = int(handle.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        mapped = 0
    return mapped + memory_mb * 1024 * 1024


def _apply_limits(limits: Limits) -> None:
    memory = address_space_limit(limits.memory_mb)
    cpu = max(1, math.ceil(limits.timeout_s)) + 1
    file_size = limits.max_file_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child(code: str, entry: str, sandbox_dir: str, limits: Limits, result_fd: int) -> None:
    """Body of the forked child; never returns."""
    status: dict[str, object]
    try:
        os.setsid()
        os.chdir(sandbox_dir)
        # Close every inherited descriptor (log files, the parent's pipes) but the result pipe.
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        sys.stdin = open(0, "r", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG instead of killing
        os.environ.clear()
        os.environ.update({"HOME": sandbox_dir, "TMPDIR": sandbox_dir, "PATH": ""})
        for name in _BLOCKED_MODULES:
            sys.modules.pop(name, None)
        _apply_limits(limits)
        guard = _Guard(sandbox_dir)
        sys.addaudithook(guard)
        try:
            compiled = compile(code, "<solution>", "exec")
        except (SyntaxError, ValueError) as error:
            status = {"error_class": SYNTAX, "error": f"{type(error).__name__}: {error}"}
        else:
            namespace: dict[str, object] = {"__name__": "__solution__"}
            try:
                exec(compiled, namespace)  # noqa: S102 - this is the sandbox
                value = eval(entry, namespace)  # noqa: S307
                status = {"value": _render(value), "error_class": ""}
            except MemoryError:
                status = {"error_class": MEMORY, "error": "MemoryError"}
            except BaseException as error:  # noqa: BLE001 - SystemExit, KeyboardInterrupt too
                status = {"error_class": RUNTIME, "error": f"{type(error).__name__}: {str(error)[:300]}"}
            if guard.violation and status.get("error_class") == RUNTIME:
                status = {"error_class": FORBIDDEN, "error": guard.violation}
            elif guard.violation and status.get("error_class") == "" and status.get("value") is None:
                status = {"error_class": FORBIDDEN, "error": guard.violation}
        payload = json.dumps(status).encode()
    except MemoryError:
        payload = b'{"error_class": "memory", "error": "MemoryError"}'
    except BaseException as error:  # noqa: BLE001
        payload = json.dumps({"error_class": RUNTIME, "error": f"sandbox setup: {error}"}).encode()
    try:
        os.write(result_fd, payload[:65536])
    finally:
        os._exit(0)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_program(code: str, entry: str = "solution()", limits: Limits = Limits()) -> Outcome:
    """Run `code`, then evaluate `entry` in its namespace, in a fresh isolated child."""
    sandbox_dir = tempfile.mkdtemp(prefix="envisions-sandbox-")
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        _child(code, entry, sandbox_dir, limits, write_fd)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = start + limits.timeout_s
    timed_out = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], remaining)
            if not ready:
                timed_out = True
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _kill_group(pid)
        _, wait_status = os.waitpid(pid, 0)
        shutil.rmtree(sandbox_dir, ignore_errors=True)
    duration = time.monotonic() - start
    if timed_out:
        return Outcome(None, TIMEOUT, f"no result within {limits.timeout_s:g} s", duration)
    try:
        status = json.loads(b"".join(chunks))
    except ValueError:
        status = None
    if not isinstance(status, dict):
        if os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGXCPU:
            return Outcome(None, TIMEOUT, "CPU time limit", duration)
        how = f"signal {os.WTERMSIG(wait_status)}" if os.WIFSIGNALED(wait_status) else "exit without result"
        return Outcome(None, RUNTIME, f"process ended: {how}", duration)
    value = status.get("value")
    return Outcome(
        value if isinstance(value, str) else None,
        str(status.get("error_class", RUNTIME)),
        str(status.get("error", "")),
        duration,
    )


def _worker_init(preload: tuple[str, ...]) -> None:
    """Warm a worker: pre-import what programs use and leave the network if we can."""
    for name in preload:
        try:
            __import__(name)
        except ImportError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        clone_newnet = 0x40000000
        clone_newuser = 0x10000000
        if libc.unshare(clone_newnet) != 0:
            libc.unshare(clone_newuser | clone_newnet)
    except (OSError, AttributeError):
        pass


def _run_batch(batch: list[tuple[str, str]], limits: Limits) -> list[dict]:
    return [asdict(run_program(code, entry, limits)) for code, entry in batch]


class SandboxPool:
    """A pool of warm workers, each forking one isolated child per program."""

    def __init__(self, workers: int, limits: Limits, chunk_size: int = 16,
                 preload: tuple[str, ...] = DEFAULT_PRELOAD) -> None:
        self.limits = limits
        self.chunk_size = chunk_size
        self._executor = ProcessPoolExecutor(
            max_workers=max(1, workers), mp_context=get_context("fork"), initializer=_worker_init,
            initargs=(preload,),
        )

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def map(self, programs: Sequence[tuple[str, str]], progress: bool = False) -> Iterator[Outcome]:
        """Run (code, entry) pairs, yielding outcomes in order as chunks finish."""
        from tqdm import tqdm

        chunks = [list(programs[i : i + self.chunk_size]) for i in range(0, len(programs), self.chunk_size)]
        futures = [self._executor.submit(_run_batch, chunk, self.limits) for chunk in chunks]
        with tqdm(total=len(programs), desc="executing", unit="prog", disable=not progress) as bar:
            for future in futures:
                for result in future.result():
                    bar.update()
                    yield Outcome(**result)


def run_many(programs: Iterable[tuple[str, str]], limits: Limits, workers: int, progress: bool = False,
             preload: tuple[str, ...] = DEFAULT_PRELOAD) -> list[Outcome]:
    """Convenience wrapper: run all programs in a fresh pool."""
    with SandboxPool(workers, limits, preload=preload) as pool:
        return list(pool.map(list(programs), progress))
