"""The kernel's side of the sandbox: namespaces for a worker, Landlock and seccomp for each program's child.

Python has no binding for these system calls, so they go through ctypes. Everything a child needs
(the Landlock ruleset's descriptor, the compiled seccomp program, the ctypes call objects) is
prepared once in the worker, so that a child makes one system call per layer: a child's first write
to a page copies it, and building these per child would copy many.

Like `fork_server`, this module is imported by the warm worker, so it imports nothing beyond the
standard library's small modules.
"""

from __future__ import annotations

import ctypes
import os

NAMESPACES = "namespaces"
LANDLOCK = "landlock"
SECCOMP = "seccomp"
KERNEL_LAYERS = (NAMESPACES, LANDLOCK, SECCOMP)
# A child's result pipe is always this descriptor; the seccomp filter keeps it there (see syscall_filter).
RESULT_FD = 3

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)

# The namespaces a worker enters (clone(2) flags), named as `unshare --help` names them.
_NAMESPACE_FLAGS = {"user": 0x10000000, "mount": 0x00020000, "pid": 0x20000000, "net": 0x40000000,
                    "ipc": 0x08000000, "uts": 0x04000000}
_MS_REC, _MS_PRIVATE, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x4000, 0x40000, 0x2, 0x4, 0x8
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _PR_CAPBSET_DROP = 1, 38, 22, 24
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SECCOMP_MODE_FILTER = 2

# Landlock (include/uapi/linux/landlock.h): system call numbers are the same on every architecture.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_FS = {name: 1 << bit for bit, name in enumerate(
    ("execute", "write_file", "read_file", "read_dir", "remove_dir", "remove_file", "make_char", "make_dir",
     "make_reg", "make_sock", "make_fifo", "make_block", "make_sym", "refer", "truncate", "ioctl_dev"))}
_FS_SINCE_ABI = {"refer": 2, "truncate": 3, "ioctl_dev": 5}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2  # ABI 6
_READ_DIR_RIGHTS = ("read_file", "read_dir")
# A program's own directory: everything but executing, device and socket/fifo nodes, and device ioctls.
_WRITE_DIR_RIGHTS = ("write_file", "read_file", "read_dir", "remove_dir", "remove_file", "make_dir", "make_reg",
                     "make_sym", "refer", "truncate")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _SockFilterProgram(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _error(what: str) -> OSError:
    number = ctypes.get_errno()
    return OSError(number, f"{what}: {os.strerror(number)}")


def enter_namespaces() -> list[str]:
    """Unshare every namespace of `_NAMESPACE_FLAGS` at once (the PID namespace takes effect for children).

    The user namespace maps this process's own uid and gid, so files keep their owners; it is what
    lets an unprivileged user create the others. Raises OSError (naming the call) where the kernel
    refuses, and then nothing was entered.
    """
    uid, gid = os.getuid(), os.getgid()
    flags = 0
    for flag in _NAMESPACE_FLAGS.values():
        flags |= flag
    if _libc.unshare(flags) != 0:
        raise _error("unshare(user, mount, pid, net, ipc, uts)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)
    return list(_NAMESPACE_FLAGS)


def become_namespace_init() -> bool:
    """In the PID namespace's first process: die with the parent, keep mounts private, mount its own /proc.

    Returns whether /proc now shows only this namespace's processes (a container that masks parts of
    /proc refuses the mount; Landlock keeps programs out of /proc either way).
    """
    _prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)
    if _libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return False
    return _libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None) == 0


def drop_privileges() -> None:
    """No new privileges (Landlock and seccomp need it) and no capabilities, for this process and its children.

    Run as root, a worker would otherwise hand its children capabilities such as setting the
    immutable flag or raising rlimits; inside a user namespace they would still hold the namespace's.
    """
    set_no_new_privileges()
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            last_capability = int(handle.read())
    except (OSError, ValueError):
        last_capability = 63
    for capability in range(last_capability + 1):
        _prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)  # fails without CAP_SETPCAP: then there is nothing to drop
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    drop_capabilities()


def set_no_new_privileges() -> None:
    """No setuid gains through exec for this process and its children; Landlock and seccomp require it."""
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _error("prctl(PR_SET_NO_NEW_PRIVS)")


def drop_capabilities() -> None:
    """Empty this process's effective, permitted and inheritable capability sets (one capset call)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all empty, both 32-bit halves
    if _libc.capset(header, data) != 0:
        raise _error("capset")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is missing or disabled."""
    version = _syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(version, 0)


def _rights(names: tuple[str, ...], abi: int) -> int:
    mask = 0
    for name in names:
        if _FS_SINCE_ABI.get(name, 1) <= abi:
            mask |= _FS[name]
    return mask


def landlock_ruleset(abi: int, read_paths: list[str], read_write_files: list[str], write_dir: str) -> int:
    """A Landlock ruleset's descriptor: read `read_paths`, read and write `read_write_files` and `write_dir`.

    Everything else in the file system is denied, and from ABI 4 on every TCP bind and connect,
    from ABI 6 on signals and abstract UNIX sockets to processes outside the child's domain.
    Paths that do not exist are skipped. The descriptor is kept open for `landlock_restrict`.
    """
    handled = _rights(tuple(_FS), abi)
    attr = _RulesetAttr(handled, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise _error("landlock_create_ruleset")
    os.set_inheritable(ruleset, False)
    file_rights = _rights(("read_file", "write_file", "truncate"), abi)
    rules = [(path, _rights(_READ_DIR_RIGHTS, abi)) for path in read_paths]
    rules += [(path, file_rights) for path in read_write_files]
    rules.append((write_dir, _rights(_WRITE_DIR_RIGHTS, abi)))
    try:
        for path, allowed in rules:
            try:
                descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if not os.path.isdir(path):  # a rule on a file takes only the rights a file can have
                    allowed &= _rights(("read_file", "write_file", "truncate", "execute"), abi)
                rule = _PathBeneathAttr(allowed, descriptor)
                if _syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise _error(f"landlock_add_rule({path})")
            finally:
                os.close(descriptor)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def landlock_restrict(ruleset: int) -> None:
    """Enter the ruleset's domain: from here on this process and its children are bound by it."""
    if _syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
        raise _error("landlock_restrict_self")


class SeccompProgram:
    """A compiled classic-BPF filter (see `syscall_filter`), held in memory the child passes to the kernel."""

    def __init__(self, bpf: bytes) -> None:
        if not bpf or len(bpf) % 8:
            raise ValueError("a seccomp program is a non-empty sequence of 8-byte instructions")
        self._instructions = ctypes.create_string_buffer(bpf, len(bpf))
        self._program = _SockFilterProgram(len(bpf) // 8, ctypes.addressof(self._instructions))
        self._address = ctypes.addressof(self._program)

    def load(self) -> None:
        """Install the filter on this process (it needs no_new_privs); it cannot be removed afterwards."""
        if _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, self._address, 0, 0) != 0:
            raise _error("prctl(PR_SET_SECCOMP)")
