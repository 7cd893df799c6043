"""The audit hook of a program's child: defence in depth behind the kernel, and the record of refusals.

Landlock, seccomp and the namespaces are what hold; this hook refuses the same things a step
earlier, at the Python level, so that a refusal is *seen*: each one writes a record to the child's
result pipe before the program can catch the PermissionError, and the worker then scores the
program `forbidden` whatever it returns. What the program does to Python afterwards cannot take
back bytes already in the pipe (and the seccomp filter keeps the pipe's descriptor in place).

Everything the hook calls is bound when it is made, and once it is installed nothing else refers to
it (no module global, no frame), so patching a module, a class or a frame's locals later does not
reach it; the ways to find it anyway (gc's object lists, tracing, swapping a function's code) are
refused.
"""

from __future__ import annotations

import os
import posixpath
import sys
from collections.abc import Callable

BLOCKED_EVENTS = frozenset((
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
    "signal.pthread_kill", "subprocess.Popen", "pty.spawn", "resource.setrlimit", "resource.prlimit",
    "os.startfile", "webbrowser.open", "os.chroot", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr",
    # the ways to reach the hook or other code's frames and objects from inside
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.settrace", "sys.setprofile", "code.__new__",
    "sys._current_frames", "sys.addaudithook",
))
BLOCKED_PREFIXES = ("socket.", "ctypes.", "mmap.", "urllib.", "http.", "ftplib.", "smtplib.", "sqlite3.",
                    "_posixsubprocess.", "os.posix_spawn", "os.exec", "os.spawn")
# ctypes may be imported (sympy needs it): every ctypes.* audit event is refused. Modules such as subprocess,
# socket or multiprocessing may be imported too (scipy.optimize imports subprocess): what they do is
# refused at their audit events and, below the hook, by the seccomp filter. cffi loads code unaudited.
BLOCKED_MODULES = frozenset(("cffi", "_cffi_backend"))
# event -> ((position of a path it changes, position of the dir_fd that path is relative to, or None), ...);
# what is only read, such as copyfile's source, is checked by its own "open" event
_PATH_EVENTS = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.rename": ((0, 2), (1, 3)),
    "os.symlink": ((0, 2), (1, 2)), "os.link": ((0, 2), (1, 3)), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
    "os.utime": ((0, 3),), "os.truncate": ((0, None),), "shutil.rmtree": ((0, 1),), "shutil.copyfile": ((1, None),),
    "shutil.move": ((0, None), (1, None)),
}
_LISTING_EVENTS = ("os.listdir", "os.scandir")
_CODE_ATTRIBUTES = frozenset(("__code__",))  # sympy sets __defaults__ at run time
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def make_hook(sandbox_dir: str, read_roots: tuple[str, ...], write_files: tuple[str, ...], record_fd: int
              ) -> Callable[[str, tuple], None]:
    """The hook: reads beneath `sandbox_dir` and `read_roots`, writes beneath `sandbox_dir` and to `write_files`.

    A refusal writes b"\\0" + what + b"\\n" to `record_fd` (the result pipe) and raises PermissionError;
    if the record cannot be written the process ends at once, so no refusal goes unrecorded. The parent
    makes it before the fork and the child only `install`s it: made in each child, its objects and the
    references it takes copied ~70 of the ~310 pages a short program's child writes.
    """
    sandbox_dir = posixpath.realpath(sandbox_dir)
    writable = (sandbox_dir, *write_files)
    readable = (sandbox_dir, *read_roots, *write_files)
    import_path = import_state()
    realpath, join, getcwd, readlink, fsdecode, write, exit_now = (
        posixpath.realpath, posixpath.join, os.getcwd, os.readlink, os.fsdecode, os.write, os._exit)
    is_instance, text, raw, number, function_type = isinstance, str, bytes, int, type(install)
    blocked_events, blocked_prefixes, blocked_modules = BLOCKED_EVENTS, BLOCKED_PREFIXES, BLOCKED_MODULES
    path_events, listing_events, code_attributes, write_flags = (_PATH_EVENTS, _LISTING_EVENTS, _CODE_ATTRIBUTES,
                                                                 _WRITE_FLAGS)
    refused = PermissionError

    def refuse(what: str) -> None:
        try:
            write(record_fd, b"\0" + text(what)[:300].encode("utf-8", "replace") + b"\n")
        except BaseException:  # noqa: BLE001 - a refusal that cannot be recorded ends the program
            exit_now(70)
        raise refused(f"sandbox: {what} is not allowed")

    def directory_of(descriptor: object) -> str | None:
        """Where a dir_fd argument points: the working directory for none, the descriptor's path, or None."""
        if descriptor is None or descriptor == -1:
            return getcwd()
        try:
            target = readlink(f"/proc/self/fd/{descriptor}")
        except (OSError, TypeError, ValueError):
            return None
        return target if target.startswith("/") else None

    def inside(path: object, roots: tuple[str, ...], descriptor: object = None) -> bool:
        if is_instance(path, raw):
            path = fsdecode(path)
        if not is_instance(path, text):
            return is_instance(path, number)  # an open descriptor: it was checked when it was opened
        base = directory_of(descriptor)
        if base is None:
            return False
        real = realpath(join(base, path))
        for root in roots:
            if real == root or real.startswith(root + "/"):
                return True
        return False

    def hook(event: str, args: tuple) -> None:
        if event in blocked_events or event.startswith(blocked_prefixes):
            refuse(event)
        elif event == "open":
            path, mode, flags = (args + (None, None, None))[:3]
            writing = (is_instance(mode, text) and any(c in mode for c in "wax+")) or (
                is_instance(flags, number) and flags & write_flags)
            if not inside(path, writable if writing else readable):
                refuse(f"{'writing' if writing else 'reading'} {path!r}")
        elif event == "import":
            name, filename, path = args[0], args[1], args[2]
            if text(name).split(".")[0] in blocked_modules:
                refuse(f"import {name}")
            if path is None:  # an extension module's native code is being loaded from `filename`
                if filename is not None and not inside(filename, read_roots):
                    refuse(f"loading native code from {filename!r}")
            elif (tuple(path), tuple(map(id, args[3])), tuple(map(id, args[4]))) != import_path:
                refuse(f"import {name} after changing the import path")
        elif event in path_events:
            for position, descriptor in path_events[event]:
                relative_to = args[descriptor] if descriptor is not None and descriptor < len(args) else None
                if not inside(args[position], writable, relative_to):
                    refuse(f"{event} on {args[position]!r}")
        elif event in listing_events:
            if args and args[0] is not None and not inside(args[0], readable):
                refuse(f"listing {args[0]!r}")
        elif event == "os.chdir":
            if not is_instance(args[0], (text, raw)) or not inside(args[0], writable):
                refuse(f"changing directory to {args[0]!r}")
        elif event == "object.__setattr__" and is_instance(args[0], function_type) and args[1] in code_attributes:
            refuse(f"replacing a function's {args[1]}")

    return hook


def import_state() -> tuple:
    """What decides where an import comes from; the hook refuses imports once it differs from when it was made."""
    return tuple(sys.path), tuple(map(id, sys.meta_path)), tuple(map(id, sys.path_hooks))


def install(hook: Callable[[str, tuple], None]) -> None:
    """Add `hook` (`make_hook`) in the child; the child then drops its own reference before the program runs."""
    sys.addaudithook(hook)
