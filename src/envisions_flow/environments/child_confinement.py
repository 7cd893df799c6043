"""What a process prepares once so that every child it forks runs confined: directory, Landlock, seccomp.

A worker enters its Landlock domain itself, once, after its start-up imports: read the read roots,
write only beneath its `programs` directory. Its children inherit the domain, so a child makes no
Landlock call at all. The worker also loads the larger part of the seccomp filter on itself; each
child adds the few rules the worker must not have (fork, signals, rlimits, its result pipe), one
prctl of a program compiled in advance. A caller that forks children directly (`sandbox.run_program`)
cannot confine itself: its children each enter a domain of their own and load the whole filter.

One program directory is emptied after each program and reused. A program that leaves something
behind which cannot be removed gets the directory taken out of use; from then on every child also
enters a domain of its own that names only the new directory, so nothing left in the old one is
reachable. Like `fork_server`, this module imports only the standard library's small modules.
"""

from __future__ import annotations

import os
import signal
import stat
import sys

from envisions_flow.environments import confinement
from envisions_flow.environments.confinement import LANDLOCK, SECCOMP


class ChildConfinement:
    """This process's program directory and the kernel layers prepared for its children."""

    def __init__(self, root: str, read_roots: tuple[str, ...], read_write_files: tuple[str, ...],
                 in_worker: bool) -> None:
        self.programs = os.path.join(root, "programs")  # beneath the worker's working directory, which stays read-only
        os.mkdir(self.programs, 0o700)
        self.read_roots = read_roots
        self.read_write_files = read_write_files
        self.in_worker = in_worker
        self.owner = os.getpid()
        self.own_pid_namespace = False
        self.landlock_abi = 0
        self.child_ruleset: int | None = None  # a domain each child enters (None: the inherited one suffices)
        self.seccomp: confinement.SeccompProgram | None = None
        self.directory = ""
        self._in_use: list[str] = []  # what `programs` holds between two programs
        self._directories = 0

    def new_directory(self) -> None:
        """A fresh program directory: at start-up, and after the last one could not be emptied."""
        while True:
            self._directories += 1
            path = os.path.join(self.programs, f"program-{self._directories}")
            try:
                os.mkdir(path, 0o700)
                break
            except FileExistsError:  # made by a program: never hand it to another one
                continue
        replacing = bool(self.directory)
        self.directory = path
        self._in_use = [os.path.basename(path)]
        if self.child_ruleset is not None:
            os.close(self.child_ruleset)
            self.child_ruleset = None
        if self.landlock_abi and (replacing or not self.in_worker):
            self.child_ruleset = self.ruleset_for(path)

    def ruleset_for(self, writable: str) -> int:
        return confinement.landlock_ruleset(self.landlock_abi, list(self.read_roots), list(self.read_write_files),
                                            writable)

    def reset_directory(self) -> str | None:
        """Empty the program directory (and the rest of `programs`) for the next program.

        None when that worked; else what was left, and the directory is taken out of use.
        """
        try:
            os.chmod(self.directory, 0o700)
            if not os.listdir(self.directory) and os.listdir(self.programs) == self._in_use:
                return None
            remove_beneath(self.directory)
            for other in set(os.listdir(self.programs)) - set(self._in_use) - self._retired():
                remove_beneath(self.programs, other)
            if os.listdir(self.directory) == []:
                return None
            problem = "entries remain"
        except OSError as error:
            problem = f"{type(error).__name__}: {error}"
        left = self.directory
        self.new_directory()
        message = f"the program left {left} in a state the sandbox cannot clean ({problem}); it is not used again"
        print(f"envisions-flow sandbox: {message}", file=sys.stderr, flush=True)
        return message

    def prepare(self, layers: list[str], seccomp_bpf: bytes, worker_bpf: bytes) -> dict[str, list]:
        """Build the layers in `layers`, try them in a throw-away child; a worker then confines itself.

        A worker enters the Landlock domain and loads `worker_bpf`, its children inherit both and add
        `seccomp_bpf`; a caller's children enter a domain of their own and load `seccomp_bpf` alone.

        Returns {layer: [active, detail]}: the kernel's version where a layer is on, why where it is not.
        """
        status: dict[str, list] = {}
        if LANDLOCK in layers:
            self.landlock_abi = confinement.landlock_abi()
            if not self.landlock_abi:
                status[LANDLOCK] = [False, "the kernel has no Landlock (Linux 5.13+ with CONFIG_SECURITY_LANDLOCK, "
                                           "lsm=landlock)"]
        worker_seccomp = None
        if SECCOMP in layers:
            try:
                self.seccomp = confinement.SeccompProgram(seccomp_bpf)
                worker_seccomp = confinement.SeccompProgram(worker_bpf) if self.in_worker else None
            except ValueError as error:
                status[SECCOMP] = [False, str(error)]
                self.seccomp = None
        try:
            self.new_directory()
            own_domain = self.ruleset_for(self.programs) if self.in_worker and self.landlock_abi else None
        except OSError as error:
            status[LANDLOCK] = [False, str(error)]
            self.landlock_abi, own_domain = 0, None
            self.child_ruleset = None
        for layer, failure in self._probe(own_domain, worker_seccomp).items():
            status[layer] = [False, failure]
            if layer == LANDLOCK:
                self.landlock_abi, own_domain = 0, None
                self.child_ruleset = None
            else:
                self.seccomp = worker_seccomp = None
        if own_domain is not None:
            confinement.landlock_restrict(own_domain)
            os.close(own_domain)
        if worker_seccomp is not None:
            worker_seccomp.load()
        if self.landlock_abi:
            status[LANDLOCK] = [True, f"ABI {self.landlock_abi}"]
        if self.seccomp is not None:
            status[SECCOMP] = [True, f"{(len(seccomp_bpf) + len(worker_bpf)) // 8} BPF instructions"]
        return status

    def _probe(self, own_domain: int | None, worker_seccomp: confinement.SeccompProgram | None) -> dict[str, str]:
        """Apply the prepared layers in a throw-away child, as a program's child does; {layer: why it failed}."""
        import json

        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(read_fd)
            failed = LANDLOCK
            try:
                self.enter_domain(own_domain if own_domain is not None else self.child_ruleset)
                failed = SECCOMP
                for program in (worker_seccomp, self.seccomp):
                    if program is not None:
                        program.load()
                os._exit(0)
            except BaseException as error:  # noqa: BLE001
                os.write(write_fd, json.dumps({failed: str(error)}).encode())
                os._exit(1)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as reader:
            report = reader.read()
        os.waitpid(pid, 0)
        return json.loads(report) if report else {}

    def enter_domain(self, ruleset: int | None) -> None:
        """In a child: the caller's children first give up privileges (a worker did once for all); then Landlock."""
        if not self.in_worker and (ruleset is not None or self.seccomp is not None):
            confinement.set_no_new_privileges()
            confinement.drop_capabilities()
        if ruleset is not None:
            confinement.landlock_restrict(ruleset)

    def end_processes(self, pid: int) -> None:
        """Kill the child's whole session; as PID 1 of its own namespace, every other process in it too."""
        try:
            if self.own_pid_namespace and os.getpid() == 1:
                os.kill(-1, signal.SIGKILL)  # PID 1 itself is spared, and nothing outside its namespace is reached
            else:
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self) -> None:
        """Collect orphans that were re-parented to this PID 1 (under the seccomp filter no child can start one)."""
        while self.own_pid_namespace and self.seccomp is None:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def _retired(self) -> set[str]:
        return {f"program-{number}" for number in range(1, self._directories)}


def remove_beneath(directory: str, name: str | None = None) -> None:
    """Delete `name` in `directory` (or everything in it) without following links, restoring permissions.

    Works on descriptors with an explicit stack, so neither depth nor path length stops it.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    top = os.open(directory, flags)
    stack = [(top, [name] if name is not None else os.listdir(top))]
    try:
        while stack:
            fd, pending = stack[-1]
            if not pending:
                stack.pop()
                if stack:  # a subdirectory, empty now: remove it from its parent
                    os.close(fd)
                    parent, parent_pending = stack[-1]
                    os.rmdir(parent_pending.pop(), dir_fd=parent)
                continue
            entry = pending[-1]
            if stat.S_ISDIR(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                os.chmod(entry, 0o700, dir_fd=fd)
                child = os.open(entry, flags, dir_fd=fd)
                stack.append((child, os.listdir(child)))
            else:
                os.unlink(entry, dir_fd=fd)
                pending.pop()
    finally:
        for fd, _ in stack[1:]:
            os.close(fd)
        os.close(top)
