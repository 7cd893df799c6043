"""Run model-written Python in confined child processes, from warm workers.

`fork_server` is what runs in a worker and in each program's child, `confinement` and
`syscall_filter` are the kernel layers, `audit_hook` the Python-level one; this module is the
caller's side: the limits, the outcomes, which layers are demanded (`execution.sandbox`), and the
pool of worker processes that batches go to. SECURITY.md says what each layer enforces.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import shutil
import site
import sys
import sysconfig
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from envisions_flow.environments import fork_server
from envisions_flow.environments.confinement import KERNEL_LAYERS, NAMESPACES, SECCOMP
from envisions_flow.environments.fork_server import FORBIDDEN, MEMORY, RUNTIME, SYNTAX, TIMEOUT
from envisions_flow.environments.limits import address_space_limit, rlimits

__all__ = ["FORBIDDEN", "MEMORY", "RUNTIME", "SYNTAX", "TIMEOUT", "Confinement", "Limits", "Outcome", "SandboxPool",
           "SandboxUnavailable", "SandboxWorkerError", "check_sandboxes", "run_many", "run_program"]

STRICT, BEST_EFFORT = "strict", "best_effort"
_SHARED_LIBRARIES = ("/usr/lib", "/lib", "/usr/lib64", "/lib64", "/usr/local/lib")
# Files outside those directories that an interpreter and its C extensions open while they run.
_READ_FILES = ("/dev/urandom", "/dev/random", "/dev/zero", "/etc/ld.so.cache")
_READ_WRITE_FILES = ("/dev/null",)
logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Confinement:
    """Which kernel layers programs run under, and whether a missing one stops the run.

    `mode` is `execution.sandbox` (`key` is how errors name it); `layers` is for benchmarks only,
    which measure what each layer costs: in a run, every kernel layer is applied.
    """

    mode: str = STRICT
    layers: tuple[str, ...] = KERNEL_LAYERS
    key: str = "execution.sandbox"

    def __post_init__(self) -> None:
        if self.mode not in (STRICT, BEST_EFFORT):
            raise ValueError(f"{self.key}: {self.mode!r} is not a sandbox mode (use {STRICT} or {BEST_EFFORT})")
        unknown = set(self.layers) - set(KERNEL_LAYERS)
        if unknown:
            raise ValueError(f"unknown sandbox layers {sorted(unknown)} (the kernel layers are {list(KERNEL_LAYERS)})")


class SandboxUnavailable(RuntimeError):
    """A kernel layer that `execution.sandbox: strict` demands is missing on this machine."""


class SandboxWorkerError(RuntimeError):
    """A warm worker process died (killed from outside: programs themselves only ever kill their own child)."""


@functools.cache
def read_roots() -> tuple[str, ...]:
    """Where programs may read: the standard library, site-packages, the shared libraries C extensions load.

    Not the rest of `sys.path`: the project's own source (an editable install's path entry) and
    the current directory stay out of reach.
    """
    paths = {sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages())
    paths.update(_SHARED_LIBRARIES)
    directories = {os.path.realpath(path) for path in paths if os.path.isdir(path)} - {"/"}
    return tuple(sorted(directories)) + tuple(path for path in _READ_FILES if os.path.exists(path))


def _seccomp_programs(in_worker: bool) -> tuple[bytes, bytes, str | None]:
    """The compiled filters (for each child, for the worker itself), or why there are none."""
    from envisions_flow.environments import syscall_filter

    try:
        if in_worker:
            return syscall_filter.child_filter(), syscall_filter.worker_filter(), None
        return syscall_filter.full_filter(), b"", None
    except OSError as error:
        return b"", b"", str(error)


def _private_root() -> str:
    """A private directory for program directories, removed when this process exits."""
    root = tempfile.mkdtemp(prefix="envisions-sandbox-")
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and _remove_root(root))
    return root


def _remove_root(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if os.path.exists(root):
        logger.warning("sandbox: could not remove %s (a program left files the sandbox cannot delete)", root)


def _configure(root: str, layers: Sequence[str], in_worker: bool) -> tuple[dict[str, Any], dict[str, list]]:
    """A worker's configuration line, and the status of the layers that cannot even be tried."""
    bpf, worker_bpf, missing = _seccomp_programs(in_worker) if SECCOMP in layers else (b"", b"", None)
    status = {SECCOMP: [False, missing]} if missing else {}
    config = {"root": root, "read_roots": list(read_roots()), "read_write_files": list(_READ_WRITE_FILES),
              "layers": [layer for layer in layers if layer not in status], "seccomp": bpf.hex(),
              "seccomp_worker": worker_bpf.hex()}
    return config, status


def describe(status: dict[str, list]) -> str:
    """One line naming the active layers (and the missing ones)."""
    active = [f"{layer} ({status[layer][1]})" for layer in KERNEL_LAYERS if layer in status and status[layer][0]]
    missing = [f"{layer}: {status[layer][1]}" for layer in KERNEL_LAYERS if layer in status and not status[layer][0]]
    line = "sandbox layers: " + ", ".join([*active, "audit hook", "rlimits"])
    return line + (f"; missing: {'; '.join(missing)}" if missing else "")


def _demand(status: dict[str, list], confinement: Confinement) -> None:
    """Raise SandboxUnavailable when strict mode lacks a layer it asked for."""
    missing = [layer for layer in confinement.layers if layer in status and not status[layer][0]]
    if missing and confinement.mode == STRICT:
        layer = missing[0]
        raise SandboxUnavailable(
            f"the sandbox's {layer} layer is not available on this machine ({status[layer][1]}). Programs would "
            f"run with a weaker sandbox; set {confinement.key}: {BEST_EFFORT} to accept that, or run on a kernel "
            f"with {', '.join(missing)} (SECURITY.md). {describe(status)}")


def run_program(code: str, entry: str = "solution()", limits: Limits = Limits(),
                confinement: Confinement = Confinement()) -> Outcome:
    """Run `code`, then evaluate `entry`, in a child forked from this very process (tests, one-offs).

    The child gets Landlock, seccomp, the audit hook and rlimits; namespaces need a worker of their own.
    """
    if not fork_server.configured():
        layers = [layer for layer in confinement.layers if layer != NAMESPACES]
        config, status = _configure(_private_root(), layers, in_worker=False)
        status.update(fork_server.configure(config["root"], config["read_roots"], config["read_write_files"],
                                            config["layers"], bytes.fromhex(config["seccomp"]), b"",
                                            in_worker=False))
        _demand(status, Confinement(confinement.mode, tuple(layers), confinement.key))
    child_limits = rlimits(limits.timeout_s, address_space_limit(limits.memory_mb), limits.max_file_mb)
    return Outcome(*fork_server.run(code, entry, limits.timeout_s, child_limits))


class _Worker:
    """One warm worker process, its request/reply pipes and the status of its layers."""

    def __init__(self, preload: Sequence[str], confinement: Confinement) -> None:
        import subprocess

        import envisions_flow

        self.root = tempfile.mkdtemp(prefix="envisions-sandbox-")
        # Isolated mode ignores PYTHONPATH: the worker is told where this very package lives.
        source = str(Path(envisions_flow.__file__).resolve().parents[1])
        command = (f"import sys; sys.path.insert(0, {source!r}); "
                   "from envisions_flow.environments.fork_server import main; main()")
        # Programs never see the caller's environment (API keys, tokens): the worker starts without it.
        environment = {name: os.environ[name] for name in ("LANG",) if name in os.environ}
        self.process = subprocess.Popen([sys.executable, "-I", "-B", "-c", command], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=environment, cwd=self.root,
                                        start_new_session=True)
        config, self.status = _configure(self.root, confinement.layers, in_worker=True)
        config["preload"] = list(preload)
        hello = self._exchange(json.dumps(config).encode() + b"\n")
        self.status.update(json.loads(hello))

    def _exchange(self, request: bytes) -> bytes:
        if self.process.poll() is not None:  # its first process is gone: PID 1 inside is being ended with it
            raise SandboxWorkerError(f"sandbox worker {self.process.pid} died (exit status {self.process.poll()})")
        try:
            self.process.stdin.write(request)
            self.process.stdin.flush()
            reply = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            reply = b""
        if not reply:
            raise SandboxWorkerError(f"sandbox worker {self.process.pid} died (exit status {self.process.poll()})")
        return reply

    def request(self, request: dict) -> Any:
        return json.loads(self._exchange(json.dumps(request).encode() + b"\n"))

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
        _remove_root(self.root)


class SandboxPool:
    """Warm worker processes, each forking one confined child per program; batches go to whichever is free."""

    def __init__(self, workers: int, limits: Limits, chunk_size: int = 16, preload: Sequence[str] = (),
                 confinement: Confinement = Confinement()) -> None:
        import queue
        from concurrent.futures import ThreadPoolExecutor

        self.limits = limits
        self.chunk_size = chunk_size
        self._workers: list[_Worker] = []
        try:
            for _ in range(max(1, workers)):
                self._workers.append(_Worker(preload, confinement))
                _demand(self._workers[-1].status, confinement)
        except BaseException:
            for worker in self._workers:
                worker.close()
            raise
        self.status = self._workers[0].status
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

    def _request(self, request: dict) -> Any:
        worker = self._idle.get()
        try:
            return worker.request(request)
        finally:
            self._idle.put(worker)

    def map(self, programs: Sequence[tuple[str, str]], progress: bool = False) -> Iterator[Outcome]:
        """Run (code, entry) pairs, yielding outcomes in order as batches finish."""
        from tqdm import tqdm

        limits = asdict(self.limits)
        batches = [list(programs[i : i + self.chunk_size]) for i in range(0, len(programs), self.chunk_size)]
        futures = [self._threads.submit(self._request, {"programs": batch, "limits": limits}) for batch in batches]
        with tqdm(total=len(programs), desc="executing", unit="prog", disable=not progress) as bar:
            for future in futures:
                for fields in future.result():
                    bar.update()
                    yield Outcome(*fields)

    def call(self, function: str, chunks: Sequence[list[list]], limits: Limits) -> Iterator[tuple[list | None, str]]:
        """Call a preloaded `function` ("module:name") on each chunk of argument lists, one confined child per chunk.

        Yields ([[result, seconds], ...], "") per chunk in order, or (None, why) for a chunk that did not finish.
        """
        request_limits = asdict(limits)
        futures = [self._threads.submit(self._request, {"function": function, "calls": chunk, "limits": request_limits})
                   for chunk in chunks]
        for future in futures:
            results, error_class, error, _ = future.result()
            yield results, f"{error_class}: {error}" if error_class else ""


def run_many(programs: Iterable[tuple[str, str]], limits: Limits, workers: int, progress: bool = False,
             preload: Sequence[str] = (), confinement: Confinement = Confinement()) -> list[Outcome]:
    """Convenience wrapper: run all programs in a fresh pool."""
    with SandboxPool(workers, limits, preload=preload, confinement=confinement) as pool:
        return list(pool.map(list(programs), progress))


def check_sandboxes(modes: dict[str, str]) -> str:
    """Start one worker with every layer it can get; raise SandboxUnavailable for a strict mode that lacks one.

    `modes` maps the config key of each `execution.sandbox` to its value (registry.sandbox_modes). Called
    once when a workflow starts, so that a missing layer stops the run before any job; returns the log line
    naming the layers (empty when no configured domain runs programs in the sandbox).
    """
    if not modes:
        return ""
    with SandboxPool(1, Limits(), confinement=Confinement(mode=BEST_EFFORT)) as pool:
        status = pool.status
    for key, mode in modes.items():
        _demand(status, Confinement(mode=mode, key=key))
    return describe(status)
