"""The seccomp filter of a program's child, compiled once by the caller with libseccomp.

libseccomp (through `pyseccomp`, a ctypes binding with the official binding's API) writes the
classic-BPF program: it checks the architecture, refuses the x32 ABI, and compares 32-bit
arguments such as ioctl's request on their low half only, which a hand-written filter easily
gets wrong. The caller compiles the filters once and hands the bytes to its workers; neither the
worker nor the child imports libseccomp. A worker loads the larger part on itself once its start-up
is done, so each child only loads the few rules that the worker itself must not have: a child's
prctl costs in proportion to the program it loads.

It is a deny list over an allowed default: an interpreter running numpy, sympy and scipy makes a
wide and version-dependent set of system calls, and the file system (Landlock) and the rest of
the machine (namespaces) are walled off by the other layers. What it refuses kills the process
(SIGSYS), which no program can catch: the worker records such a death as `forbidden`.
"""

from __future__ import annotations

import errno
import functools
import tempfile

# kept in place, so that a program cannot swap the pipe the audit hook records refusals on
from envisions_flow.environments.confinement import RESULT_FD


# Refused in the worker once its start-up is done, and so in every child it forks.
_KILLED_EVERYWHERE = (
    "execve", "execveat",
    # tracing other processes and their memory
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd",
    # device nodes and fifos, mounts, root changes, namespaces
    "mknod", "mknodat", "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    # kernel interfaces with a history of escapes, and io_uring (its operations would bypass this filter)
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "name_to_handle_at", "open_by_handle_at", "fanotify_init",
    "lookup_dcookie", "modify_ldt", "uselib", "vhangup", "iopl", "ioperm",
    # the machine itself
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
    "swapoff", "acct", "syslog", "quotactl", "quotactl_fd", "sethostname", "setdomainname", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex",
    # networks: socket() of any family (socketpair, which reaches nothing, stays allowed)
    "socket",
)
# What the worker itself does (fork children, kill them, close its descriptors) but a child must not.
_KILLED_IN_CHILDREN = (
    "fork", "vfork", "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open",
    "pidfd_send_signal",
    "setrlimit",  # the rlimits set before the filter was loaded (prlimit64 below)
)
_CLONE_THREAD = 0x00010000
_CLONE_NEW_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
# ioctl requests that set file flags (chattr: immutable, append-only) or push input into a terminal
_FORBIDDEN_IOCTLS = (0x40086602, 0x40046602, 0x401C5820, 0x5412)
_F_SETFL = 4


def worker_filter() -> bytes:
    """The filter a worker loads on itself at the end of its start-up; children inherit it."""
    return _compile(everywhere=True, children=False)


def child_filter() -> bytes:
    """The filter each child of a worker adds on top of the worker's: one short program to load per child."""
    return _compile(everywhere=False, children=True)


def full_filter() -> bytes:
    """Both in one, for a child forked from a caller that has no filter of its own (`sandbox.run_program`)."""
    return _compile(everywhere=True, children=True)


@functools.cache
def _compile(everywhere: bool, children: bool) -> bytes:
    """A BPF program; raises OSError where libseccomp is missing."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError, OSError) as error:  # pyseccomp raises RuntimeError without libseccomp.so
        raise OSError(f"libseccomp could not be loaded ({error}); install libseccomp2") from None
    kill = seccomp.KILL_PROCESS
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    # a binary tree of system call numbers instead of a chain: at each prctl the kernel walks the filter
    # for every call number to cache the ones it always allows (measured: half the time of a chain)
    rules.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    names = (_KILLED_EVERYWHERE if everywhere else ()) + (_KILLED_IN_CHILDREN if children else ())
    for name in names:
        try:
            number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        except (ValueError, TypeError):
            continue
        if number >= 0:  # a call this architecture does not have needs no rule
            rules.add_rule(kill, name)
    if everywhere:
        # glibc's pthread_create tries clone3 first and falls back to clone, whose flags a filter can read
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        for flag in _CLONE_NEW_NAMESPACES:
            rules.add_rule(kill, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        for request in _FORBIDDEN_IOCTLS:
            rules.add_rule(kill, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    if children:
        rules.add_rule(kill, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))  # threads only
        rules.add_rule(kill, "prlimit64", seccomp.Arg(2, seccomp.NE, 0))  # reading limits passes NULL here
        rules.add_rule(kill, "close", seccomp.Arg(0, seccomp.EQ, RESULT_FD))
        rules.add_rule(kill, "dup2", seccomp.Arg(1, seccomp.EQ, RESULT_FD))
        rules.add_rule(kill, "dup3", seccomp.Arg(1, seccomp.EQ, RESULT_FD))
        rules.add_rule(kill, "close_range", seccomp.Arg(0, seccomp.LE, RESULT_FD),
                       seccomp.Arg(1, seccomp.GE, RESULT_FD))
        rules.add_rule(kill, "fcntl", seccomp.Arg(0, seccomp.EQ, RESULT_FD), seccomp.Arg(1, seccomp.EQ, _F_SETFL))
    with tempfile.TemporaryFile() as sink:
        rules.export_bpf(sink)
        sink.seek(0)
        return sink.read()
