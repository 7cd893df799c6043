"""Programs that attack the sandbox, one test per attack class of issue 18.

Each attack returns 1 only when it worked, and its gold answer is 1, so b must be 0. A canary
secret sits in the environment of the job that runs them (tests/sandbox_job.py) and in a file
outside the sandbox; an honest program follows every attack and must still be judged right.
With `hook="off"` the audit hook is gone, as if a program had switched it off: the kernel layers
(Landlock, seccomp) alone must then hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from envisions_flow.environments.sandbox import Limits, SandboxPool

ROOT = Path(__file__).resolve().parents[1]
HONEST = ("from fractions import Fraction\n\ndef solution():\n    return int(Fraction(14, 2))\n", "7")


pytestmark = pytest.mark.usefixtures("require_sandbox_layers")


def program(body: str, imports: str = "import os") -> str:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return f"{imports}\n\ndef solution():\n{lines}\n"


def attack(tmp_path: Path, attacks: list[str], hook: str, batches: int = 1) -> tuple[list[list], Path]:
    """Run each attack followed by an honest program (`batches` times over) in a job holding the canary.

    Returns the job's results per batch and the outside directory, after checking that the attack left
    no process behind and did not touch the outside directory.
    """
    token = f"CANARY-{uuid.uuid4().hex}"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary.txt").write_text(token)
    (outside / "victim.txt").write_text("keep me")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    batch = []
    for code in attacks:
        batch += [[code.replace("OUTSIDE", str(outside)), "1"], list(HONEST)]
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(scratch),
                   "HOME": str(outside), "ENVISIONS_CANARY": token}
    job = subprocess.run([sys.executable, str(ROOT / "tests" / "sandbox_job.py")], env=environment, text=True,
                         input=json.dumps({"batches": [batch] * batches, "hook": hook}), capture_output=True,
                         timeout=600)
    assert job.returncode == 0, job.stderr
    reply = json.loads(job.stdout.splitlines()[-1])
    assert sorted(path.name for path in outside.iterdir()) == ["canary.txt", "victim.txt"]
    assert (outside / "canary.txt").read_text() == token and (outside / "victim.txt").read_text() == "keep me"
    assert not _processes_beneath(tmp_path), "a program left a process behind"
    for results in reply["results"]:
        for index, (b, error_class, error, value) in enumerate(results):
            if index % 2:
                assert (b, value) == (1, "7"), f"honest program after attack {index // 2}: {results}"
            else:
                assert b == 0, f"attack {index // 2} worked: {attacks[index // 2]}\n{results}"
    return reply["results"], outside


def _processes_beneath(directory: Path) -> list[int]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.cwd().startswith(str(directory)):
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


def classes(results: list[list]) -> list[str]:
    return [error_class for error_class in (r[1] for r in results[0][::2])]


@pytest.mark.parametrize("hook", ["on", "off"])
def test_relative_paths_after_a_change_of_directory(tmp_path: Path, hook: str) -> None:
    results, _ = attack(tmp_path, [
        program("os.chdir('/etc')\nreturn int('root:' in open('passwd').read())"),
        program("os.chdir('OUTSIDE')\nreturn int('CANARY-' in open('canary.txt').read())"),
        program("os.chdir('OUTSIDE')\nopen('escaped.txt', 'w').write('x')\nos.remove('victim.txt')\nreturn 1"),
        program("fd = os.open('OUTSIDE', os.O_PATH)\nos.fchdir(fd)\n"
                "return int('CANARY-' in open('canary.txt').read())"),
        program("return int('canary.txt' in os.listdir('OUTSIDE') or len(os.listdir('/root')) > 0)"),
        # the job's secrets in /proc/<ancestor>/environ: every process this child can name
        program("""
found = False
for pid in {os.getppid(), 1, *range(1, 64)}:
    try:
        os.chdir(f'/proc/{pid}')
        found = found or b'CANARY-' in open('environ', 'rb').read()
    except OSError:
        pass
    try:
        found = found or b'CANARY-' in open(f'/proc/{pid}/environ', 'rb').read()
    except OSError:
        pass
return int(found or any('CANARY-' in value for value in os.environ.values()))"""),
    ], hook)
    if hook == "on":
        assert set(classes(results)) == {"forbidden"}


@pytest.mark.parametrize("hook", ["on", "off"])
def test_descriptors_symbolic_links_sqlite_and_device_nodes(tmp_path: Path, hook: str) -> None:
    results, _ = attack(tmp_path, [
        program("os.symlink('OUTSIDE', 'link')\nreturn int('CANARY-' in open('link/canary.txt').read())"),
        program("os.symlink('OUTSIDE', 'link')\nfd = os.open('link', os.O_PATH)\n"
                "return int(b'CANARY-' in os.read(os.open('canary.txt', os.O_RDONLY, dir_fd=fd), 100))"),
        program("fd = os.open('OUTSIDE', os.O_PATH)\nos.remove('victim.txt', dir_fd=fd)\nreturn 1"),
        program("fd = os.open('OUTSIDE', os.O_PATH)\nos.rename('victim.txt', 'moved.txt', src_dir_fd=fd, dst_dir_fd=fd)"
                "\nreturn 1"),
        program("""
connection = sqlite3.connect(':memory:')
connection.execute("ATTACH DATABASE 'OUTSIDE/escaped.db' AS outside")
connection.execute('CREATE TABLE outside.t (x)')
connection.commit()
return int(os.path.exists('OUTSIDE/escaped.db'))""", "import os\nimport sqlite3"),
        program("os.mknod('kmsg', 0o20600, os.makedev(1, 11))\nreturn int(len(open('kmsg', 'rb').read(10)) > 0)"),
        program("os.mkfifo('fifo')\nreturn 1"),
    ], hook)
    if hook == "on":
        assert set(classes(results)) == {"forbidden"}


@pytest.mark.parametrize("hook", ["on", "off"])
def test_a_program_that_switches_the_audit_hook_off_still_meets_the_kernel(tmp_path: Path, hook: str) -> None:
    canary_by_native_code = """
libc = ctypes.CDLL(None)
fd = libc.open(b'OUTSIDE/canary.txt', 0)
return int(fd >= 0)"""
    results, _ = attack(tmp_path, [
        # find the hook through the garbage collector and swap its code
        program("""
for thing in gc.get_objects():
    if callable(thing) and getattr(thing, '__name__', '') == 'hook':
        thing.__code__ = (lambda event, args: None).__code__
return int('CANARY-' in open('OUTSIDE/canary.txt').read())""", "import gc"),
        # patch what the hook's path check calls, so that every path looks inside the sandbox
        program("""
import posixpath
here = os.getcwd()
posixpath._joinrealpath = lambda path, rest, strict, seen: (here, True)
try:
    return int('CANARY-' in open('OUTSIDE/canary.txt').read())
except OSError:
    return 0"""),
        # native code: libc's open(), and a process that outlives the pool
        program(canary_by_native_code, "import ctypes"),
        program("""
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        import time
        time.sleep(60)
    os._exit(0)
return 1"""),
        program("return ctypes.CDLL(None).syscall(57)", "import ctypes"),  # fork(2) by number
    ], hook)
    if hook == "on":
        assert set(classes(results)) == {"forbidden", ""}  # the realpath patch is refused by Landlock alone


@pytest.mark.parametrize("hook", ["on", "off"])
def test_no_program_poisons_later_programs(tmp_path: Path, hook: str) -> None:
    """A module written into its own directory, the worker's, the project's or the interpreter's import path.

    The shared directories get a module of a unique name, never one that shadows a real module: a
    sandbox that failed here would otherwise break every Python process on the machine.
    """
    import sysconfig

    import envisions_flow

    name = f"envisions_poison_{uuid.uuid4().hex}"
    package = Path(envisions_flow.__file__).parent
    shared = [package, package.parent, Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["stdlib"])]
    poison = ("from fractions import *\\nclass Fraction(int):\\n    def __new__(cls, *a):\\n"
              "        return int.__new__(cls, 1)\\n")
    targets = ["fractions.py", "../fractions.py", *(f"{directory}/{name}.py" for directory in shared)]
    try:
        attack(tmp_path, [
            program(f"""
written = 0
for target in {targets!r}:
    try:
        open(target, 'w').write('{poison}')
        written += target != 'fractions.py'
    except OSError:
        pass
sys.path.insert(0, os.getcwd())
sys.modules.pop('fractions', None)
server = [module for name, module in sys.modules.items() if name.endswith(('fork_server', 'environments.values'))]
for module in server:
    module.render_value = lambda value: ('42', 'number')
    module.WARM_MODULES = ()
return int(written > 0)""", "import os\nimport sys"),
            program(f"import {name}\nreturn 1"),
        ], hook, batches=2)
    finally:
        written = [directory / f"{name}.py" for directory in shared if (directory / f"{name}.py").exists()]
        for path in written:
            path.unlink()
    assert not written, f"{written} were written"
    assert not list((tmp_path / "tmp").rglob("fractions.py"))


@pytest.mark.parametrize("hook", ["on", "off"])
def test_a_program_cannot_kill_its_worker_or_batch(tmp_path: Path, hook: str) -> None:
    attack(tmp_path, [
        program("for n in range(2, 7):\n    os.mkdir(f'../program-{n}')\nreturn 1"),
        program("os.kill(os.getppid(), 9)\nreturn 1"),
        program("os.close(3)\nreturn 1"),
        program("os.closerange(0, 100)\nreturn 1"),
        program("os.dup2(os.open('junk', os.O_CREAT | os.O_WRONLY), 3)\nreturn 1"),
        program("os.write(3, b'x' * 2_000_000)\nreturn 1"),
        program("resource.setrlimit(resource.RLIMIT_CPU, (-1, -1))\nreturn 1", "import os\nimport resource"),
    ], hook, batches=2)


def test_a_caught_refusal_is_still_forbidden(tmp_path: Path) -> None:
    results, _ = attack(tmp_path, [
        program("try:\n    open('OUTSIDE/canary.txt').read()\nexcept PermissionError:\n    pass\nreturn 1"),
        program("""
try:
    open('OUTSIDE/canary.txt').read()
except PermissionError:
    pass
import gc
gc.collect()
sys.modules.clear()
return 1""", "import sys"),
        # look for the hook (made in the worker before the fork) in every frame and module the program can
        # reach, widen what it lets through, then catch the kernel's refusal
        program("""
try:
    raise ValueError
except ValueError as error:
    frame = error.__traceback__.tb_frame
reachable = []
while frame is not None:
    reachable += list(frame.f_locals.values()) + list(frame.f_globals.values())
    frame = frame.f_back
reachable += list(getattr(sys.modules.get('envisions_flow.environments.fork_server'), '_prepared', []))
for thing in reachable:
    if callable(thing) and getattr(thing, '__name__', '') == 'hook' and getattr(thing, '__closure__', None):
        for cell in thing.__closure__:  # the roots it lets through: every path now lies beneath ''
            roots = cell.cell_contents
            if isinstance(roots, tuple) and roots and all(isinstance(r, str) and r.startswith('/') for r in roots):
                cell.cell_contents = ('',)
try:
    open('OUTSIDE/canary.txt').read()
except OSError:
    pass
return 1""", "import sys"),
    ], "on")
    assert classes(results) == ["forbidden", "forbidden", "forbidden"]


@pytest.mark.parametrize("hook", ["on", "off"])
def test_files_a_program_cannot_delete_or_left_locked_do_not_reach_the_next(tmp_path: Path, hook: str) -> None:
    # chattr +i (FS_IOC_SETFLAGS with FS_IMMUTABLE_FL) on a file of its own; then a maze of modes and links
    results, _ = attack(tmp_path, [
        program("""
fd = os.open('locked', os.O_CREAT | os.O_RDONLY)
fcntl.ioctl(fd, 0x40086602, struct.pack('i', 0x10))
return 1""", "import fcntl\nimport os\nimport struct"),
        program("""
os.makedirs('a/b/c')
open('a/b/c/f', 'w').write('x')
try:
    os.symlink('OUTSIDE', 'a/link')
except OSError:
    pass
os.chmod('a/b/c/f', 0)
os.chmod('a/b/c', 0)
os.chmod('a/b', 0)
os.chmod('.', 0o500)
return 0"""),
        program("return int(os.listdir('.') == [] and os.access('.', os.W_OK)) + 1"),
    ], hook)
    assert results[0][4][:2] == [0, ""] and results[0][4][3] == "2", "a program found the last one's files"


def test_logic_programs_are_answered_under_the_same_confinement(tmp_path: Path) -> None:
    from envisions_flow.environments.logic import LogicEnvironment, _ANSWER, _PRELOAD
    from envisions_flow.environments.base import Task

    secret = tmp_path / "secret.txt"
    secret.write_text("CANARY")
    with SandboxPool(1, Limits(timeout_s=5), preload=_PRELOAD) as pool:
        chunks = [[[str(secret)]], [["/proc"]], [["Predicates:\nA($x, bool)\nFacts:\nA(a, True)\nRules:\nQuery:\n"
                                                 "A(a, True)", False]]]
        opened, listed, answered = (list(pool.call(function, [chunk], Limits(timeout_s=5)))[0]
                                    for function, chunk in zip(["builtins:open", "os:listdir", _ANSWER], chunks))
    assert opened[0] is None and opened[1].startswith("forbidden")
    assert listed[0] is None and listed[1].startswith("forbidden")
    assert answered[0][0][0] == "True", answered
    program = "Predicates:\nA($x, bool)\nFacts:\nA(a, True)\nRules:\nQuery:\nA(a, True)"
    assert LogicEnvironment(workers=1).execute([Task("t", "q", "True")], [program])[0].b == 1


def test_native_code_written_into_the_program_directory_is_refused(tmp_path: Path) -> None:
    """A C extension copied into the program's directory and loaded (the kernel lets it run: the hook refuses it)."""
    results, _ = attack(tmp_path, [program("""
import glob
import importlib.machinery
import importlib.util
source = glob.glob(os.path.join(os.path.dirname(os.__file__), 'lib-dynload', '_bisect.*.so'))[0]
open(os.path.basename(source), 'wb').write(open(source, 'rb').read())
loader = importlib.machinery.ExtensionFileLoader('_bisect', os.path.abspath(os.path.basename(source)))
module = importlib.util.module_from_spec(importlib.util.spec_from_loader('_bisect', loader))
return int(module.bisect([1, 2], 1) == 1)""")], "on")
    assert classes(results) == ["forbidden"]
