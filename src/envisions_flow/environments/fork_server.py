"""The warm worker's side of the sandbox: it forks one isolated child per program.

Each child gets its own session (so the whole process group is killed afterwards), its own
empty working directory, rlimits on address space, CPU time and file size, stdout/stderr on
/dev/null, and an audit hook that refuses process creation, signals, sockets, native code and
any file access outside its directory. A worker tries to enter a new network namespace once
at start-up, so even a hook bypass finds no network. The worker only ever receives a short
string rendering of the return value; judging it against the gold answer happens elsewhere.

This module is all a worker imports. Every fork copies the worker's page tables and every
page a child writes is copied on its first write (a few us each in a VM), so the worker stays a
lean interpreter (no tempfile, dataclasses or typing: a worker with them forked 0.3 ms slower)
and the child is handed everything prepared before the fork.
"""

from __future__ import annotations

import functools
import json
import math
import os
import resource
import select
import signal
import sys
import time

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
_CUT = slice(0, _MAX_VALUE_CHARS + 1)  # a character more than is kept: a longer text is marked TRUNCATED
_MAX_ITEMS = 100  # elements of a container that are rendered (its text is cut at _MAX_VALUE_CHARS anyway)
_MAX_DEPTH = 8  # nesting of containers that is rendered (a list holding itself ends here)
# Modules a worker imports once, before forking, when a program names them: the child then finds them
# loaded (imports inside the sandbox are slow and read files). Nothing is imported up front: every fork
# copies the worker's page tables, and a worker holding sympy forks several times slower.
WARM_MODULES = ("math", "fractions", "decimal", "itertools", "functools", "collections", "statistics", "datetime",
                "re", "sympy", "numpy", "scipy")


# The kind of value a program returned, beside its text: the judge (math_answers.py) credits only one number
# for a numeric gold, and the text alone cannot tell the number 18 from the list [18] rendered as a set.
NUMBER = "number"  # int, float, Fraction, Decimal, a numpy or sympy real scalar
COMPLEX = "complex"  # written a + bi
STRING = "string"
BOOL = "bool"
CONTAINER = "container"  # list, tuple, set, range, array: tuples as points, lists as solution sets
MAPPING = "mapping"  # a dict: no mathematical answer, whatever it holds
EXPRESSION = "expression"  # any other sympy object, as LaTeX
TRUNCATED = "truncated"  # longer than _MAX_VALUE_CHARS: what was cut off ("... or 36") is unknown
OTHER = "other"


def _render(value: object) -> tuple[str | None, str]:
    """(text of at most _MAX_VALUE_CHARS, kind) of a return value; (None, "") for None.

    Values are read through their base types' own methods (int.__repr__, str slicing, the
    slots of Fraction and Rational), so a subclass cannot change what is recorded or pass the
    length cap. numpy, sympy, fractions and decimal are only looked at when already loaded,
    which they are whenever the program returned one of their objects.
    """
    if value is None:
        return None, ""
    try:
        text, kind = _math_text(value, 0)
    except Exception:  # noqa: BLE001 - an int past 4,300 digits, a property that raises: no plain value
        text, kind = "<unrenderable value>", OTHER
    if len(text) > _MAX_VALUE_CHARS:
        text, kind = str.__getitem__(text, slice(0, _MAX_VALUE_CHARS)), TRUNCATED
    return (text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")), kind


def _math_text(value: object, depth: int) -> tuple[str, str]:
    """The value written as mathematics, and its kind (see _render)."""
    if value is True or value is False:
        return ("True" if value else "False"), BOOL
    if isinstance(value, str):
        return str.__getitem__(value, _CUT), STRING
    if isinstance(value, int):
        return int.__repr__(value), NUMBER
    if isinstance(value, float):
        return float.__repr__(value), NUMBER
    if isinstance(value, complex):
        parts = (complex.real.__get__(value), complex.imag.__get__(value))
        return _complex_text(*(_real_text(part) for part in parts)), COMPLEX
    if isinstance(value, (list, tuple, set, frozenset, range)):
        return _container_text(value, depth), CONTAINER
    if isinstance(value, dict):
        return _mapping_text(value, depth), MAPPING
    modules = sys.modules
    numpy, sympy = modules.get("numpy"), modules.get("sympy")
    fractions, decimal = modules.get("fractions"), modules.get("decimal")
    if fractions is not None and isinstance(value, fractions.Fraction):
        numerator = int.__repr__(fractions.Fraction._numerator.__get__(value))
        denominator = int.__repr__(fractions.Fraction._denominator.__get__(value))
        return (numerator if denominator == "1" else f"{numerator}/{denominator}"), NUMBER
    if decimal is not None and isinstance(value, decimal.Decimal):
        return decimal.Decimal.__str__(value), NUMBER
    if numpy is not None and isinstance(value, numpy.generic):
        return _math_text(numpy.generic.item(value), depth + 1)
    if numpy is not None and isinstance(value, numpy.ndarray):
        if numpy.ndarray.ndim.__get__(value) == 0:
            return _math_text(numpy.ndarray.item(value), depth + 1)
        if numpy.ndarray.size.__get__(value) > _MAX_ITEMS * _MAX_ITEMS:
            return f"array of shape {numpy.ndarray.shape.__get__(value)}", CONTAINER
        return _container_text(numpy.ndarray.tolist(value), depth), CONTAINER
    if sympy is not None and isinstance(value, (sympy.Basic, sympy.MatrixBase)):
        return _sympy_text(sympy, value)
    return str.__getitem__(str(value), _CUT), OTHER


def _real_text(number: float) -> str:
    """A part of a complex number: 6.0 as 6."""
    if number.is_integer() and abs(number) < 2**53:
        return int.__repr__(int(number))
    return float.__repr__(number)


def _complex_text(real: str, imaginary: str) -> str:
    """a + bi, the way MATH writes its answers (6 - 5i, i, -2i)."""
    coefficient = {"1": "", "-1": "-"}.get(imaginary, imaginary)
    if real in {"0", "-0"}:
        return f"{coefficient}i"
    if coefficient.startswith("-"):
        return f"{real} - {coefficient[1:]}i"
    return f"{real} + {coefficient}i"


def _container_text(value: object, depth: int) -> str:
    """Tuples as points (1, 2), sets as \\{1, 2\\}, a returned list as the solution set 1, 2."""
    if depth >= _MAX_DEPTH:
        return "\\ldots"
    if isinstance(value, (set, frozenset)):
        items = set.__iter__(value) if isinstance(value, set) else frozenset.__iter__(value)
        return "\\{" + _items_text(items, depth) + "\\}"
    if isinstance(value, tuple):
        return "(" + _items_text(tuple.__iter__(value), depth) + ")"
    items = _items_text(iter(value) if isinstance(value, range) else list.__iter__(value), depth)
    return items if depth == 0 else f"({items})"


def _mapping_text(value: dict, depth: int) -> str:
    if depth >= _MAX_DEPTH:
        return "\\ldots"
    pairs = ((_math_text(key, depth + 1)[0], _math_text(item, depth + 1)[0]) for key, item in dict.items(value))
    return "{" + _items_text((f"{key}: {item}" for key, item in pairs), depth) + "}"


def _items_text(items: object, depth: int) -> str:
    """The first _MAX_ITEMS items, comma-separated."""
    parts: list[str] = []
    size = 0
    for item in items:
        if len(parts) == _MAX_ITEMS or size > _MAX_VALUE_CHARS:
            parts.append("\\ldots")
            break
        text = _math_text(item, depth + 1)[0]
        parts.append(text)
        size += len(text) + 2
    return ", ".join(parts)


def _sympy_text(sympy: object, value: object) -> tuple[str, str]:
    """Rationals and Floats as numbers, complex numbers as a + bi, anything else as sympy's LaTeX."""
    if isinstance(value, sympy.Rational):  # p and q are slots, or class attributes of the singletons (S.Half)
        numerator, denominator = int.__repr__(value.p), int.__repr__(value.q)
        return (numerator if denominator == "1" else f"{numerator}/{denominator}"), NUMBER
    if isinstance(value, sympy.Float):
        return float.__repr__(sympy.Float.__float__(value)), NUMBER
    if isinstance(value, sympy.Basic) and value.is_number and value.has(sympy.I):
        real, imaginary = value.as_real_imag()
        if imaginary != 0:
            return _complex_text(str.__str__(sympy.latex(real)), str.__str__(sympy.latex(imaginary))), COMPLEX
    return str.__getitem__(sympy.latex(value), _CUT), EXPRESSION


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


def rlimits(timeout_s: float, memory: int, max_file_mb: int) -> list[tuple[int, tuple[int, int]]]:
    """A child's rlimits, worked out before the fork so that the child only makes the system calls.

    `memory` is the address-space cap in bytes (see `address_space_limit`).
    """
    cpu = max(1, math.ceil(timeout_s)) + 1
    file_size = max_file_mb * 1024 * 1024
    return [(resource.RLIMIT_AS, (memory, memory)), (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_FSIZE, (file_size, file_size)), (resource.RLIMIT_CORE, (0, 0))]


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


def _child(code: str, entry: str, sandbox_dir: str, rlimits: list, guard: "_Guard", result_fd: int) -> None:
    """Body of the forked child; never returns. Everything it can be handed is prepared before the fork."""
    status: dict[str, object]
    try:
        os.setsid()
        os.chdir(sandbox_dir)
        devnull = _devnull()
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        # Close every inherited descriptor (log files, the parent's pipes, /dev/null's) but the result pipe.
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        sys.stdin, sys.stdout, sys.stderr = _quiet_streams()
        if not _environment_cleared:  # forked from a caller, not from a worker
            _enter_sandbox_environment(sandbox_dir)
        for name in _BLOCKED_MODULES:
            sys.modules.pop(name, None)
        for which, limit in rlimits:
            resource.setrlimit(which, limit)
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
                rendered, kind = _render(value)
                status = {"value": rendered, "kind": kind, "error_class": ""}
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


_roots: dict[int, str] = {}  # process id -> the directory its programs' directories go in
_program_count = 0


def use_root(root: str) -> None:
    """Put this process's program directories under `root` (an existing private directory)."""
    _roots[os.getpid()] = root


def has_root() -> bool:
    """Whether this process has a root (one forked from a process that had one does not)."""
    return os.getpid() in _roots


def _program_directory() -> str:
    """A new empty directory for one program: a numbered one under this process's root.

    `mkdtemp` and `rmtree` per program cost a tenth of a short program's run; `mkdir` and
    `rmdir` of a numbered name are two system calls.
    """
    global _program_count
    _program_count += 1
    path = os.path.join(_roots[os.getpid()], str(_program_count))
    os.mkdir(path, 0o700)
    return path


def _remove_directory(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:  # the program left files behind (or changed the directory's mode)
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(code: str, entry: str, timeout_s: float, limits: list[tuple[int, tuple[int, int]]]
        ) -> tuple[str | None, str, str, float, str]:
    """Run `code`, then evaluate `entry` in its namespace, in a fresh isolated child.

    Returns (rendered value, error class, error, seconds, kind of value); `limits` comes from `rlimits`.
    This process needs a root for program directories (`use_root`).
    """
    _quiet_streams()
    _devnull()
    sandbox_dir = _program_directory()
    guard = _Guard(sandbox_dir)
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        _child(code, entry, sandbox_dir, limits, guard, write_fd)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = start + timeout_s
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
        _remove_directory(sandbox_dir)
    duration = time.monotonic() - start
    if timed_out:
        return None, TIMEOUT, f"no result within {timeout_s:g} s", duration, ""
    try:
        status = json.loads(b"".join(chunks))
    except ValueError:
        status = None
    if not isinstance(status, dict):
        if os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGXCPU:
            return None, TIMEOUT, "CPU time limit", duration, ""
        how = f"signal {os.WTERMSIG(wait_status)}" if os.WIFSIGNALED(wait_status) else "exit without result"
        return None, RUNTIME, f"process ended: {how}", duration, ""
    value = status.get("value")
    return (value if isinstance(value, str) else None, str(status.get("error_class", RUNTIME)),
            str(status.get("error", "")), duration, str(status.get("kind", "")))


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


def _warm_up() -> None:
    """Do, once in the worker, the first-use set-up that every child would otherwise repeat.

    The first `compile()` in a process builds CPython's ~120 AST types, and a child only
    inherits what its worker already did: built in every child, they were half the cost of a
    short program (1.9 -> 0.9 ms of CPU, 390 -> 250 page faults per child).
    """
    namespace: dict[str, object] = {}
    exec(compile("def solution():\n    return 1", "<warm-up>", "exec"), namespace)  # noqa: S102 - a constant
    rendered, kind = _render(eval("solution()", namespace))  # noqa: S307 - a constant
    json.dumps({"value": rendered, "kind": kind, "error_class": ""})


def serve(preload: list[str], root: str) -> None:
    """A warm worker's loop: a JSON batch of programs on each stdin line, a JSON list of outcomes back.

    A request is {"programs": [[code, entry], ...], "limits": {"timeout_s", "memory_mb",
    "max_file_mb"}}; an outcome is [value, error class, error, seconds, kind]. Program directories
    go under `root`, which the caller made and removes.
    """
    for name in preload:
        _import_quietly(name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_root(root)
    _clear_environment()
    _warm_up()
    _leave_network()
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    for line in requests:
        request = json.loads(line)
        limits = request["limits"]
        for code, _ in request["programs"]:
            _warm_for(code)
        # once the batch's imports are in: the address-space cap sits on top of what the worker maps
        child_limits = rlimits(limits["timeout_s"], address_space_limit(limits["memory_mb"]), limits["max_file_mb"])
        outcomes = [run(code, entry, limits["timeout_s"], child_limits) for code, entry in request["programs"]]
        replies.write(json.dumps(outcomes).encode() + b"\n")
        replies.flush()
