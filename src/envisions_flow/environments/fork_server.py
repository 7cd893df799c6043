"""The warm worker's side of the sandbox: it forks one confined child per program.

A worker is a fresh interpreter in isolated mode (`python -I`: no current directory on its import
path, no PYTHON* variables), started without the job's environment, in its own user, mount, PID,
network, IPC and UTS namespaces, without capabilities (`confinement`). Its first process stays
outside the PID namespace and only waits; the second is PID 1 inside, so that nothing a program
starts outlives the worker. After its start-up imports the worker enters its Landlock domain and
loads most of the seccomp filter (`child_confinement`); each program's child then gets its own
session, rlimits on address space, CPU time and file size, stdout/stderr on /dev/null, the program
directory as its working directory, the rest of the seccomp filter and the audit hook
(`audit_hook`). The worker only ever receives a short string rendering of the return value and its
kind (`values.render_value`); judging it against the gold answer happens elsewhere.

This module is all a worker imports besides its layers' modules. Every fork copies the worker's
page tables and every page a child writes is copied on its first write (a few us each in a VM), so
the worker stays a lean interpreter (no tempfile, dataclasses or typing: a worker with them forked
0.3 ms slower) and the child is handed everything prepared before the fork.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import select
import signal
import sys
import time

from envisions_flow.environments import audit_hook, confinement
from envisions_flow.environments.child_confinement import ChildConfinement
from envisions_flow.environments.confinement import NAMESPACES, RESULT_FD
from envisions_flow.environments.limits import address_space_limit, open_statm, rlimits
from envisions_flow.environments.values import render_value

# Error classes a sandboxed run can end with ("" means it returned normally).
SYNTAX = "syntax"
RUNTIME = "runtime"
FORBIDDEN = "forbidden"
TIMEOUT = "timeout"
MEMORY = "memory"

# What a worker reads from one child's result pipe at most; a program writing more into it is stopped.
_MAX_CHANNEL_BYTES = 1 << 20
# Modules a worker imports once, before forking, when a program names them: the child then finds them
# loaded (imports inside the sandbox are slow and read files). Nothing is imported up front: every fork
# copies the worker's page tables, and a worker holding sympy forks several times slower.
WARM_MODULES = ("math", "fractions", "decimal", "itertools", "functools", "collections", "statistics", "datetime",
                "re", "sympy", "numpy", "scipy")


@functools.cache
def _quiet_streams() -> tuple:
    """Text streams on fds 0-2, made once before forking: each child points them at /dev/null.

    Every page a child writes is copied on its first write, and building three text
    streams in each child was a quarter of the cost of running a short program.
    """
    return open(0, "r", closefd=False), open(1, "w", closefd=False), open(2, "w", closefd=False)  # noqa: SIM115


@functools.cache
def _devnull() -> int:
    """A descriptor on /dev/null, opened once before forking, for the child's fds 0-2."""
    return os.open(os.devnull, os.O_RDWR)


def _enter_sandbox_environment(home: str) -> None:
    """Only HOME and TMPDIR (`home`) and an empty PATH; oversized writes fail with EFBIG instead of killing."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update({"HOME": home, "TMPDIR": home, "PATH": ""})


_environment_cleared = False  # set in a worker, whose whole environment is the sandbox's from its start


def _clear_environment() -> None:
    """Give this worker the sandbox's environment once, so its children need not each clear it.

    A child's first write to a page copies the page (a few us each in this VM), and clearing
    `os.environ` plus setting a signal handler wrote ~120 pages per child. HOME and TMPDIR are
    "." here: each child runs in its own directory.
    """
    global _environment_cleared
    _enter_sandbox_environment(".")
    _environment_cleared = True


_sandbox: ChildConfinement | None = None


def configured() -> bool:
    """Whether this very process has a sandbox (a process forked from one that had one has not)."""
    return _sandbox is not None and _sandbox.owner == os.getpid()


def configure(root: str, read_roots: list[str], read_write_files: list[str], layers: list[str], seccomp_bpf: bytes,
              worker_bpf: bytes, in_worker: bool) -> dict[str, list]:
    """Prepare the Landlock and seccomp layers in `layers` for this process's children; directories in `root`.

    Returns {layer: [active, detail]} (`ChildConfinement.prepare`).
    """
    global _sandbox
    open_statm()  # opened while this process may still read /proc (a worker confines itself below)
    _sandbox = ChildConfinement(root, tuple(read_roots), tuple(read_write_files), in_worker)
    return _sandbox.prepare(layers, seccomp_bpf, worker_bpf)


# The audit hook each child installs (`audit_hook.make_hook`), made in the worker and made again only when
# what it checks changes (the program directory, the import path). Made and dropped around every fork, it
# and the references it takes were 30 of the ~200 pages the worker wrote per program (after a fork, the
# first write to each page faults). A child takes it out of the list, so the program finds no reference.
_prepared: list = []
_prepared_for: tuple | None = None


def _prepare_hook() -> None:
    """Make the hook for the current program directory and import path, unless the one made last fits."""
    global _prepared_for
    key = (_sandbox.directory, audit_hook.import_state())
    if _prepared_for != key:
        _prepared[:] = [audit_hook.make_hook(_sandbox.directory, _sandbox.read_roots, _sandbox.read_write_files,
                                             RESULT_FD)]
        _prepared_for = key


def _child(body, limits: list, result_fd: int) -> None:
    """Body of the forked child; never returns. Everything it is handed is prepared before the fork.

    The program runs only once every layer is in place; a layer that fails ends the child first.
    """
    sandbox = _sandbox
    channel = result_fd
    try:
        os.setsid()
        os.chdir(sandbox.directory)
        for which, limit in limits:
            resource.setrlimit(which, limit)
        sandbox.enter_domain(sandbox.child_ruleset)
        devnull = _devnull()
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if result_fd != RESULT_FD:
            os.dup2(result_fd, RESULT_FD)
            channel = RESULT_FD
        # Close every inherited descriptor (log files, the parent's pipes, the ruleset) but the result pipe.
        os.closerange(RESULT_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        sys.stdin, sys.stdout, sys.stderr = _quiet_streams()
        if not _environment_cleared:  # forked from a caller, not from a worker
            _enter_sandbox_environment(sandbox.directory)
        for name in audit_hook.BLOCKED_MODULES:
            sys.modules.pop(name, None)
        sys.dont_write_bytecode = True  # an import inside the sandbox must not try to write a .pyc
        if sandbox.seccomp is not None:
            sandbox.seccomp.load()
        hook = _prepared.pop()  # the program finds no reference to the hook but the interpreter's
        audit_hook.install(hook)
        del hook
    except BaseException as error:  # noqa: BLE001
        _send(channel, {"error_class": RUNTIME, "error": f"sandbox setup failed: {type(error).__name__}: {error}"})
    try:
        status = body()
    except MemoryError:
        status = {"error_class": MEMORY, "error": "MemoryError"}
    except BaseException as error:  # noqa: BLE001 - SystemExit, KeyboardInterrupt too
        status = {"error_class": RUNTIME, "error": f"{type(error).__name__}: {str(error)[:300]}"}
    _send(RESULT_FD, status)


def _send(channel: int, status: dict) -> None:
    """Write the child's last word to the result pipe and end the child."""
    try:
        try:
            payload = json.dumps(status).encode()
        except (TypeError, ValueError) as error:
            payload = json.dumps({"error_class": RUNTIME, "error": f"unreadable result: {error}"}).encode()
        view = memoryview(payload)
        while view:
            view = view[os.write(channel, view):]
    except MemoryError:
        os.write(channel, b'{"error_class": "memory", "error": "MemoryError"}')
    finally:
        os._exit(0)


def _program(code: str, entry: str):
    """A child's body for one model-written program: run `code`, then evaluate `entry` in its namespace."""

    def body() -> dict:
        try:
            compiled = compile(code, "<solution>", "exec")
        except (SyntaxError, ValueError) as error:
            return {"error_class": SYNTAX, "error": f"{type(error).__name__}: {error}"}
        namespace: dict[str, object] = {"__name__": "__solution__"}
        exec(compiled, namespace)  # noqa: S102 - this is the sandbox
        rendered, kind = render_value(eval(entry, namespace))  # noqa: S307
        return {"value": None if rendered is None else [rendered, kind], "error_class": ""}

    return body


def _calls(function, calls: list[list]):
    """A child's body for a chunk of calls of one of our own functions on model-written data (logic programs)."""

    def body() -> dict:
        results = []
        for arguments in calls:
            started = time.monotonic()
            results.append([function(*arguments), time.monotonic() - started])
        return {"value": results, "error_class": ""}

    return body


def _run_child(body, timeout_s: float, limits: list) -> tuple[object, str, str, float]:
    """Fork a confined child that runs `body`; (value, error class, error, seconds)."""
    _quiet_streams()
    _devnull()
    _prepare_hook()
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        _child(body, limits, write_fd)
    os.close(write_fd)
    chunks: list[bytes] = []
    size, overflow, timed_out = 0, False, False
    deadline = start + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            ready = select.select([read_fd], [], [], remaining)[0] if remaining > 0 else []
            if not ready:
                timed_out = True
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_CHANNEL_BYTES:
                overflow = True
                break
    finally:
        os.close(read_fd)
        _sandbox.end_processes(pid)
        _, wait_status = os.waitpid(pid, 0)
        _sandbox.reap()
        problem = _sandbox.reset_directory()
    duration = time.monotonic() - start
    if problem:
        return None, FORBIDDEN, problem, duration
    return (*_verdict(b"".join(chunks), overflow, timed_out, wait_status, timeout_s), duration)


def _verdict(data: bytes, overflow: bool, timed_out: bool, wait_status: int, timeout_s: float
             ) -> tuple[object, str, str]:
    """What a child's result pipe and exit say. A refusal recorded by the audit hook outweighs any result."""
    if b"\0" in data:
        return None, FORBIDDEN, data.split(b"\0", 2)[1].split(b"\n", 1)[0].decode("utf-8", "replace")
    if overflow:
        return None, FORBIDDEN, f"wrote more than {_MAX_CHANNEL_BYTES} bytes into the result pipe"
    signalled = os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else 0
    if signalled == signal.SIGSYS:
        return None, FORBIDDEN, "a system call the sandbox refuses (seccomp)"
    if timed_out:
        return None, TIMEOUT, f"no result within {timeout_s:g} s"
    try:
        status = json.loads(data)
    except ValueError:
        status = None
    if not isinstance(status, dict):
        if signalled == signal.SIGXCPU:
            return None, TIMEOUT, "CPU time limit"
        return None, RUNTIME, f"process ended: {f'signal {signalled}' if signalled else 'exit without result'}"
    return status.get("value"), str(status.get("error_class", RUNTIME)), str(status.get("error", ""))


def run(code: str, entry: str, timeout_s: float, limits: list[tuple[int, tuple[int, int]]]
        ) -> tuple[str | None, str, str, float, str]:
    """Run `code`, then evaluate `entry` in its namespace, in a fresh confined child.

    Returns (rendered value, error class, error, seconds, kind of value); `limits` comes from `rlimits`.
    This process must be configured first (`configure`).
    """
    value, error_class, error, duration = _run_child(_program(code, entry), timeout_s, limits)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(part, str) for part in value):
        return value[0], error_class, error, duration, value[1]  # [text, kind] from render_value
    return None, error_class, error, duration, ""


def call(function: str, calls: list[list], timeout_s: float, limits: list) -> tuple[list | None, str, str, float]:
    """Call `function` ("module:name", a module this worker preloaded) on each argument list, in one confined child.

    Returns ([[result, seconds], ...] or None, error class, error, seconds for the whole chunk).
    """
    module, _, name = function.partition(":")
    if module not in sys.modules:
        return None, RUNTIME, f"{module} is not preloaded in this worker", 0.0
    value, error_class, error, duration = _run_child(_calls(getattr(sys.modules[module], name), calls), timeout_s,
                                                     limits)
    return (value if isinstance(value, list) and not error_class else None), error_class, error, duration


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


def _warm_up() -> None:
    """Do, once in the worker, the first-use set-up that every child would otherwise repeat.

    The first `compile()` in a process builds CPython's ~120 AST types, and a child only
    inherits what its worker already did: built in every child, they were half the cost of a
    short program (1.9 -> 0.9 ms of CPU, 390 -> 250 page faults per child).
    """
    namespace: dict[str, object] = {}
    exec(compile("def solution():\n    return 1", "<warm-up>", "exec"), namespace)  # noqa: S102 - a constant
    json.dumps({"value": list(render_value(eval("solution()", namespace))), "error_class": ""})  # noqa: S307 - a constant


def _enter_namespaces() -> list:
    """Enter new namespaces: [entered, detail]. The first process stays outside the new PID namespace and waits."""
    try:
        names = confinement.enter_namespaces()
    except OSError as error:
        return [False, str(error)]
    pid = os.fork()
    if pid:  # the caller's view of the worker: it waits, and exits as PID 1 did
        os.close(0)
        os.close(1)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
    proc = confinement.become_namespace_init()
    return [True, ", ".join(names) + ("" if proc else "; /proc not remounted (Landlock keeps programs out of it)")]


def _serve_one(request: dict) -> list:
    limits = request["limits"]
    if "programs" in request:
        for code, _ in request["programs"]:
            _warm_for(code)
    # once the batch's imports are in: the address-space cap sits on top of what the worker maps
    child_limits = rlimits(limits["timeout_s"], address_space_limit(limits["memory_mb"]), limits["max_file_mb"])
    if "programs" in request:
        return [_guarded(run, code, entry, limits["timeout_s"], child_limits) for code, entry in request["programs"]]
    return _guarded(call, request["function"], request["calls"], limits["timeout_s"], child_limits)


def _guarded(function, *arguments) -> list:
    """An outcome even when the worker itself fails at a program (no descriptors or processes left)."""
    try:
        return list(function(*arguments))
    except OSError as error:
        return [None, RUNTIME, f"sandbox worker: {type(error).__name__}: {error}", 0.0]


def _beneath(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root + "/") for root in roots)


def main() -> None:
    """A warm worker: one JSON configuration line on stdin, a JSON line of layer status back, then batches.

    The configuration is {"preload", "root", "read_roots", "read_write_files", "layers", "seccomp"
    and "seccomp_worker" (hex)}. A request is {"programs": [[code, entry], ...], "limits": {"timeout_s", "memory_mb",
    "max_file_mb"}}, answered by a list of [value, error class, error, seconds, kind], or {"function":
    "module:name", "calls": [[argument, ...], ...], "limits"}, answered by one such outcome whose
    value is [[result, seconds], ...]. Program directories go under `root`, which the caller made
    and removes.
    """
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    config = json.loads(requests.readline())
    status: dict[str, list] = {}
    if NAMESPACES in config["layers"]:
        status[NAMESPACES] = _enter_namespaces()
    try:
        confinement.drop_privileges()
    except OSError as error:
        print(f"envisions-flow sandbox: {error}", file=sys.stderr, flush=True)
    for name in config["preload"]:
        _import_quietly(name)
    # the worker found its own package through the caller's path; the children's imports see only what they may read
    sys.path[:] = [entry for entry in sys.path if _beneath(os.path.realpath(entry), config["read_roots"])]
    status.update(configure(config["root"], config["read_roots"], config["read_write_files"], config["layers"],
                            bytes.fromhex(config["seccomp"]), bytes.fromhex(config["seccomp_worker"]),
                            in_worker=True))
    _sandbox.own_pid_namespace = status.get(NAMESPACES, [False])[0]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _clear_environment()
    _warm_up()
    replies.write(json.dumps(status).encode() + b"\n")
    replies.flush()
    for line in requests:
        replies.write(json.dumps(_serve_one(json.loads(line))).encode() + b"\n")
        replies.flush()
