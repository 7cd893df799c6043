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

import functools
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
from dataclasses import asdict, dataclass
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
# Modules a worker imports once, before forking, when a program names them: the child then finds them
# loaded (imports inside the sandbox are slow and read files). Nothing is imported up front: every fork
# copies the worker's page tables, and a worker holding sympy forks several times slower.
WARM_MODULES = ("math", "fractions", "decimal", "itertools", "functools", "collections", "statistics", "datetime",
                "re", "sympy", "numpy", "scipy")


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


@functools.cache
def _read_roots() -> tuple[str, ...]:
    """Where children may read: the Python installation and sys.path (computed once per worker, before forking)."""
    return tuple(
        {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path) if p and os.path.isabs(p)}
        - {"/"}
    )


class _Guard:
    """The audit hook that keeps a child inside its directory and away from the system."""

    def __init__(self, sandbox_dir: str) -> None:
        self.sandbox_dir = os.path.realpath(sandbox_dir)
        self.read_roots = _read_roots()
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


def _apply_limits(limits: Limits, memory: int) -> None:
    cpu = max(1, math.ceil(limits.timeout_s)) + 1
    file_size = limits.max_file_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@functools.cache
def _quiet_streams() -> tuple:
    """Text streams on fds 0-2, made once before forking: each child points them at /dev/null.

    Every page a child writes is copied on its first write, and building three text
    streams in each child was a quarter of the cost of running a short program.
    """
    return open(0, "r", closefd=False), open(1, "w", closefd=False), open(2, "w", closefd=False)  # noqa: SIM115


def _child(code: str, entry: str, sandbox_dir: str, limits: Limits, memory: int, result_fd: int) -> None:
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
        sys.stdin, sys.stdout, sys.stderr = _quiet_streams()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG instead of killing
        os.environ.clear()
        os.environ.update({"HOME": sandbox_dir, "TMPDIR": sandbox_dir, "PATH": ""})
        for name in _BLOCKED_MODULES:
            sys.modules.pop(name, None)
        _apply_limits(limits, memory)
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
    _read_roots()
    _quiet_streams()
    memory = address_space_limit(limits.memory_mb)
    sandbox_dir = tempfile.mkdtemp(prefix="envisions-sandbox-")
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        _child(code, entry, sandbox_dir, limits, memory, write_fd)
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


def _import_quietly(name: str) -> None:
    try:
        __import__(name)
    except ImportError:
        pass


def _warm_for(code: str) -> None:
    """Import, in the worker, the warm modules a program names, so its child finds them loaded."""
    for name in WARM_MODULES:
        if name in code and name not in sys.modules:
            _import_quietly(name)


def _leave_network() -> None:
    """Enter a new network namespace (as root, or through a user namespace) if the kernel lets us."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        clone_newnet = 0x40000000
        clone_newuser = 0x10000000
        if libc.unshare(clone_newnet) != 0:
            libc.unshare(clone_newuser | clone_newnet)
    except (OSError, AttributeError):
        pass


def serve(preload: Sequence[str] = ()) -> None:
    """A warm worker's loop: a JSON batch of (code, entry) on each stdin line, a JSON list of outcomes back.

    The worker is a fresh interpreter that imported little more than this module: each
    per-program fork copies the worker's page tables, so a worker forked from a caller
    holding pandas or torch (or one with sympy preloaded) forks several times slower.
    """
    for name in preload:
        _import_quietly(name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _leave_network()
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    for line in requests:
        request = json.loads(line)
        limits = Limits(**request["limits"])
        outcomes = []
        for code, entry in request["programs"]:
            _warm_for(code)
            outcome = run_program(code, entry, limits)
            outcomes.append([outcome.value, outcome.error_class, outcome.error, outcome.duration_s])
        replies.write(json.dumps(outcomes).encode() + b"\n")
        replies.flush()


class SandboxWorkerError(RuntimeError):
    """A warm worker process died (killed from outside: programs themselves only ever kill their own child)."""


class _Worker:
    """One warm worker process and its request/reply pipes."""

    def __init__(self, preload: Sequence[str]) -> None:
        import subprocess

        command = f"from envisions_flow.sandbox import serve; serve({list(preload)!r})"
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
