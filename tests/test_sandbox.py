"""The sandbox contains hostile programs: each ends with b=0-worthy error class, nothing escapes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from envisions_flow.environments.sandbox import (
    FORBIDDEN,
    MEMORY,
    RUNTIME,
    SYNTAX,
    TIMEOUT,
    Limits,
    SandboxPool,
    SandboxWorkerError,
    run_many,
    run_program,
)

LIMITS = Limits(timeout_s=2.0, memory_mb=1024)
pytestmark = pytest.mark.usefixtures("require_sandbox_layers")


def solution(body: str, imports: str = "") -> str:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return f"{imports}\ndef solution():\n{lines}\n"


HOSTILE = {
    "infinite_loop": (solution("while True:\n    pass"), TIMEOUT),
    "fork_bomb": (solution("while True:\n    os.fork()", "import os"), FORBIDDEN),
    "allocate_10gb": (solution("block = bytearray(10 * 1024 ** 3)\nreturn len(block)"), MEMORY),
    "os_system": (solution("os.system('echo hi')\nreturn 1", "import os"), FORBIDDEN),
    "subprocess": (solution("return subprocess.run(['true']).returncode", "import subprocess"), FORBIDDEN),
    "read_passwd": (solution("return open('/etc/passwd').read()"), FORBIDDEN),
    "socket": (solution("return socket.create_connection(('127.0.0.1', 22))", "import socket"), FORBIDDEN),
    "signal_parent": (solution("os.kill(os.getppid(), 9)", "import os"), FORBIDDEN),
    "ctypes_fork": (solution("return ctypes.CDLL(None).fork()", "import ctypes"), FORBIDDEN),
    "deep_recursion": ("def solution():\n    return solution()\n", RUNTIME),
    "sys_exit": (solution("sys.exit(3)", "import sys"), RUNTIME),
    "print_forever": (solution("while True:\n    print('x' * 100000)"), TIMEOUT),
    "syntax_error": ("def solution(:\n    return 1\n", SYNTAX),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained(name: str) -> None:
    code, expected = HOSTILE[name]
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    started = time.monotonic()
    outcome = run_program(code, limits=LIMITS)
    assert outcome.error_class == expected, outcome
    assert outcome.value is None
    assert time.monotonic() - started < LIMITS.timeout_s + 10  # cut off at its limit (a loaded machine starts slowly)
    time.sleep(0.1)
    after = {child.pid for child in psutil.Process().children(recursive=True)}
    assert after <= before, f"{name} left processes behind: {after - before}"


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("where", ["elsewhere", "results", "project"])
def test_writes_outside_the_sandbox_are_refused(tmp_path: Path, where: str) -> None:
    # a new file elsewhere or in the results directory, or an append to the project's own README
    target = {"elsewhere": tmp_path / "escaped.txt", "results": ROOT / "results" / "escaped.txt",
              "project": ROOT / "README.md"}[where]
    before = target.read_bytes() if target.exists() else None
    code = solution(f"os.makedirs({str(target.parent)!r}, exist_ok=True)\nopen({str(target)!r}, 'a').write('x')\n"
                    "return 1", "import os")
    outcome = run_program(code, limits=LIMITS)
    assert outcome.error_class == FORBIDDEN
    assert (target.read_bytes() if target.exists() else None) == before


def test_writes_inside_the_sandbox_work_and_are_thrown_away() -> None:
    code = solution("open('scratch.txt', 'w').write('41')\nreturn int(open('scratch.txt').read()) + 1")
    outcome = run_program(code, limits=LIMITS)
    assert (outcome.value, outcome.error_class) == ("42", "")


def test_each_program_gets_an_empty_directory_and_nothing_is_left_behind() -> None:
    """One directory per worker, emptied after every program (its Landlock rule names it), removed at the end."""
    leave_files = solution("os.makedirs('a/b')\nopen('a/b/f.txt', 'w').write('x')\nos.chmod('a', 0)\n"
                           "return os.getcwd()", "import os")
    look = solution("return str(os.listdir('.')) + ' ' + os.getcwd()", "import os")
    with SandboxPool(1, LIMITS) as pool:
        first, second = list(pool.map([(leave_files, "solution()"), (look, "solution()")]))
        assert first.error_class == "" and os.listdir(first.value) == []
        root = pool._workers[0].root
    listing, directory = second.value.split(" ")
    assert listing == "[]" and directory.startswith(root)
    assert not os.path.exists(root)


def test_environment_and_directory_changes_stay_in_the_child() -> None:
    cwd, path_variable = os.getcwd(), os.environ.get("PATH")
    outcome = run_program(solution("os.mkdir('sub')\nos.chdir('sub')\nos.environ['PATH'] = 'x'\nreturn os.getcwd()",
                                   "import os"), limits=LIMITS)
    assert outcome.value.endswith("/sub")
    assert (os.getcwd(), os.environ.get("PATH")) == (cwd, path_variable)


def test_return_values_are_rendered() -> None:
    programs = [
        (solution("return 3 / 4"), "0.75"),
        (solution("return Fraction(1, 3)", "from fractions import Fraction"), "1/3"),
        (solution("return 7"), "7"),
        (solution("return None"), None),
        (solution("x = sympy.Symbol('x')\nreturn sympy.solve(x - 5, x)[0]", "import sympy"), "5"),
    ]
    outcomes = run_many([(code, "solution()") for code, _ in programs], LIMITS, workers=2)
    assert [outcome.value for outcome in outcomes] == [value for _, value in programs]
    assert all(outcome.error_class == "" for outcome in outcomes)


def test_pool_keeps_order_and_survives_hostile_neighbours() -> None:
    programs = [(solution(f"return {i}"), "solution()") for i in range(40)]
    programs[7] = (HOSTILE["fork_bomb"][0], "solution()")
    programs[20] = (HOSTILE["allocate_10gb"][0], "solution()")
    outcomes = run_many(programs, LIMITS, workers=2)
    assert [o.value for i, o in enumerate(outcomes) if i not in (7, 20)] == [
        str(i) for i in range(40) if i not in (7, 20)
    ]
    assert (outcomes[7].error_class, outcomes[20].error_class) == (FORBIDDEN, MEMORY)


def test_memory_limit_is_on_top_of_what_the_parent_maps():
    """A parent with a large address space (torch reserves gigabytes) must not starve the programs."""
    import mmap

    reserved = mmap.mmap(-1, 4 * 1024**3)  # 4 GB of address space, never touched
    try:  # forked from this very process, not from a pool's fresh worker
        outcomes = [run_program(solution("return len(bytearray(200 * 1024**2))"), limits=LIMITS),
                    run_program(HOSTILE["allocate_10gb"][0], limits=LIMITS)]
    finally:
        reserved.close()
    assert (outcomes[0].value, outcomes[0].error_class) == (str(200 * 1024**2), "")
    assert outcomes[1].error_class == MEMORY


def test_programs_never_see_the_callers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither os.environ in the child nor the worker's own environment block (which the child inherits)."""
    monkeypatch.setenv("ENVISIONS_TEST_TOKEN", "s3cret")
    with SandboxPool(1, LIMITS) as pool:
        outcomes = list(pool.map([(solution("return ' '.join(sorted(os.environ.values()))", "import os"),
                                   "solution()")]))
        worker_environment = Path(f"/proc/{pool._workers[0].process.pid}/environ").read_bytes()
    assert outcomes[0].error_class == "" and "s3cret" not in outcomes[0].value
    assert b"s3cret" not in worker_environment


def test_a_worker_killed_from_outside_is_reported_not_hidden() -> None:
    with SandboxPool(1, LIMITS) as pool:
        assert [o.value for o in pool.map([(solution("return 1"), "solution()")])] == ["1"]
        pool._workers[0].process.kill()
        pool._workers[0].process.wait()
        with pytest.raises(SandboxWorkerError, match="died"):
            list(pool.map([(solution("return 2"), "solution()")]))


# A kernel without Landlock and without unprivileged namespaces, made by a seccomp filter on this process
# and everything it starts: landlock_create_ruleset answers ENOSYS (as before Linux 5.13), unshare EPERM.
OLD_KERNEL = """
import errno, os, sys
import pyseccomp as seccomp
rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "landlock_create_ruleset")
rules.add_rule(seccomp.ERRNO(errno.EPERM), "unshare")
rules.load()
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""
CHECK = ("from envisions_flow.environments.sandbox import check_sandboxes; "
         "print(check_sandboxes({'domains.math.execution.sandbox': %r}))")


def test_a_kernel_without_a_layer_stops_a_strict_run_before_any_job(tmp_path: Path) -> None:
    import subprocess
    import sys

    wrapper = tmp_path / "old_kernel.py"
    wrapper.write_text(OLD_KERNEL)
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "src"), "HOME": str(tmp_path)}

    def run(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(wrapper), *arguments], capture_output=True, text=True, cwd=ROOT,
                              env=environment, timeout=600)

    strict = run("-c", CHECK % "strict")
    assert strict.returncode != 0 and "SandboxUnavailable" in strict.stderr
    assert "namespaces layer is not available" in strict.stderr
    assert "domains.math.execution.sandbox: best_effort" in strict.stderr
    weak = run("-c", CHECK % "best_effort")
    assert weak.returncode == 0, weak.stderr
    assert weak.stdout.startswith("sandbox layers: seccomp") and "missing: namespaces" in weak.stdout
    assert "landlock: the kernel has no Landlock" in weak.stdout
    workflow = run("-m", "snakemake", "-n", "--cores", "1")
    assert workflow.returncode != 0
    assert "domains.math.execution.sandbox: best_effort" in workflow.stdout + workflow.stderr
    assert "Job stats" not in workflow.stdout + workflow.stderr


def test_the_start_up_line_names_the_active_layers() -> None:
    from envisions_flow.environments.registry import sandbox_modes
    from envisions_flow.environments.sandbox import check_sandboxes

    execution = {"timeout_s": 2, "memory_mb": 512, "workers": 1}
    domains = {name: {"train": {}, "testsets": {}, "execution": execution} for name in ("math", "web")}
    assert sandbox_modes({"domains": domains}) == {"domains.math.execution.sandbox": "strict"}  # web: no sandbox
    line = check_sandboxes(sandbox_modes({"domains": domains}))
    assert line.startswith("sandbox layers: namespaces (user, mount, pid, net, ipc, uts")
    assert "landlock (ABI " in line and "seccomp (" in line and "missing" not in line
    assert check_sandboxes(sandbox_modes({"domains": {"web": domains["web"]}})) == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="setting the immutable flag from outside needs root")
def test_a_directory_the_worker_cannot_empty_is_reported_and_never_used_again() -> None:
    """A file made immutable from outside (as an attacker holding CAP_LINUX_IMMUTABLE could) defeats cleanup.

    The program is `forbidden`, its directory is retired, and later programs' Landlock domain names only the
    new directory: even past a fooled audit hook, the retired directory cannot be listed.
    """
    import subprocess
    import threading

    # it waits for the test to lock its file (a handshake: a fixed sleep lost the race on a loaded machine)
    leave = solution("open('locked', 'w').write('x')\nopen('marker', 'w').write('left')\n"
                     "while not os.path.exists('go'):\n    time.sleep(0.01)\nreturn os.getcwd()", "import os\nimport time")
    look = solution("""
import posixpath
here = os.getcwd()
posixpath._joinrealpath = lambda path, rest, strict, seen: (here, True)
try:
    return str('marker' in os.listdir(os.path.join(os.path.dirname(here), 'program-1')))
except OSError as error:
    return type(error).__name__""", "import os")
    with SandboxPool(1, Limits(timeout_s=120, memory_mb=1024)) as pool:
        directory = Path(pool._workers[0].root) / "programs" / "program-1"
        locked = directory / "locked"
        first: list = []
        runner = threading.Thread(target=lambda: first.extend(pool.map([(leave, "solution()")])))
        runner.start()
        deadline = time.monotonic() + 60
        while not (directory / "marker").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        subprocess.run(["chattr", "+i", str(locked)], check=True)
        (directory / "go").write_text("")
        runner.join()
        try:
            # the third writes in its own, new directory: the audit hook was made again for it
            second, third = pool.map([(look, "solution()"),
                                      (solution("open('note', 'w').write('7')\nreturn 6 * int(open('note').read())"),
                                       "solution()")])
        finally:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert first[0].error_class == FORBIDDEN and "cannot clean" in first[0].error
    assert (second.value, third.value) == ("PermissionError", "42")


def test_the_worker_stays_a_lean_interpreter() -> None:
    """Every fork copies the worker's page tables and every page written after it faults, in worker and child.

    `typing`, imported for one annotation, was ~1.3 MB of a serving worker (and a child inherits exactly its
    worker's modules, so a program sees them): such imports slow every program.
    """
    heavy = "('typing', 'dataclasses', 'tempfile', 'pandas', 'envisions_flow.environments.sandbox')"
    code = solution(f"return ' '.join(name for name in {heavy} if name in sys.modules) or 'lean'", "import sys")
    assert run_many([(code, "solution()")], LIMITS, workers=1)[0].value == "lean"


def test_honest_programs_using_libraries_are_not_refused() -> None:
    """Submodules imported inside the sandbox, threads, temporary directories: none of it is `forbidden`."""
    programs = [
        (solution("return round(scipy.optimize.brentq(lambda x: x * x - 4, 0, 5), 6)", "import scipy.optimize"), "2.0"),
        (solution("x = sympy.Symbol('x')\nreturn sympy.integrate(x ** 2, (x, 0, 3))", "import sympy"), "9"),
        (solution("return int(numpy.linalg.matrix_rank(numpy.eye(3)))", "import numpy"), "3"),
        (solution("out = []\nthread = threading.Thread(target=lambda: out.append(5))\nthread.start()\nthread.join()\n"
                  "return out[0]", "import threading"), "5"),
        (solution("with tempfile.TemporaryDirectory() as d:\n    open(d + '/x', 'w').write('3')\n"
                  "    return int(open(d + '/x').read())", "import tempfile"), "3"),
    ]
    outcomes = run_many([(code, "solution()") for code, _ in programs], Limits(timeout_s=30), workers=1)
    assert [(o.value, o.error_class) for o in outcomes] == [(value, "") for _, value in programs], outcomes


def test_a_misspelt_sandbox_mode_is_refused_by_name() -> None:
    from envisions_flow.environments.sandbox import Confinement

    with pytest.raises(ValueError, match=r"domains.math.execution.sandbox: 'strcit' is not a sandbox mode"):
        Confinement(mode="strcit", key="domains.math.execution.sandbox")
