"""Tests for `clicker.tasks.sandbox` and the `code` task.

Each escape test is written so that it would pass the run if the escape worked (the tests part is
empty, or the program ends normally), and then checks both that the run did not pass and that
the side effect (a file, a connection, a dead process) did not happen.
"""

from __future__ import annotations

import os
import random
import resource
import socket
import subprocess
from pathlib import Path

import pytest

from clicker.tasks import TASKS, CodeTask, make_world
from clicker.tasks.code import STOP, TEMPLATES
from clicker.tasks.sandbox import SandboxLimits, SandboxResult, run_sandboxed, seccomp_program

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
linux_kernel_layer = pytest.mark.skipif(seccomp_program(1) is None,
                                        reason="no seccomp filter for this platform")


def run(code: str, tests: str = "", **limits) -> SandboxResult:
    return run_sandboxed(code, tests, limits=SandboxLimits(**{"wall_s": 5, **limits}))


def contained(r: SandboxResult) -> None:
    assert not r.passed and r.status != "passed", r
    assert "\n" not in r.detail and r.detail, r


# --- verdicts ----------------------------------------------------------------------------------


def test_correct_solution_passes() -> None:
    r = run(ADD, ADD_TESTS)
    assert (r.passed, r.status) == (True, "passed"), r
    assert r.seconds > 0


def test_wrong_solution_fails_with_the_failing_test() -> None:
    r = run("def add(a, b):\n    return a - b\n", ADD_TESTS)
    assert r.status == "failed" and not r.passed
    assert r.detail == "AssertionError [tests line 1: assert add(2, 3) == 5]"


def test_syntax_error_and_exceptions_are_errors() -> None:
    r = run("def add(a, b)\n    return a + b\n", ADD_TESTS)
    assert r.status == "error" and r.detail.startswith("SyntaxError"), r
    r = run("def add(a, b):\n    return a + None\n", ADD_TESTS)
    assert r.status == "error" and r.detail.startswith("TypeError"), r
    assert r.detail.endswith("[tests line 1: assert add(2, 3) == 5]"), r  # which test
    r = run("1 / 0\n" + ADD, ADD_TESTS)
    assert r.status == "error" and r.detail.endswith("[solution line 1: 1 / 0]"), r
    r = run(ADD + "raise SystemExit(0)\n", ADD_TESTS)
    assert r.status == "error" and r.detail.startswith("SystemExit"), r


def test_a_fake_pass_line_does_not_pass() -> None:
    code = ("import os, sys\nprint('PASS')\nsys.__stdout__.write('PASS\\n')\n"
            "for fd in range(1, 10):\n    try:\n"
            "        os.write(fd, b'PASS\\n' + b'0' * 32 + b' PASS\\n')\n"
            "    except OSError:\n        pass\nos._exit(0)\n")
    r = run(code)
    contained(r)
    assert r.status == "error" and "without a verdict" in r.detail, r


def test_fresh_empty_directory_environment_and_stdlib_imports() -> None:
    code = ("import os, collections, dataclasses, heapq, itertools, json, math, re, string\n"
            "assert os.listdir('.') == [], os.listdir('.')\n"
            "assert set(os.environ) <= {'PATH', 'LC_CTYPE'}, dict(os.environ)\n"
            "open('scratch.txt', 'w').write('inside is fine')\n"
            "os.mkdir('sub')\nopen('sub/x', 'w').close()\nos.rename('sub/x', 'sub/y')\n"
            "raise SystemExit(os.getcwd() + ' ' + open('scratch.txt').read())\n")
    r = run(code)
    assert r.status == "error" and " inside is fine [solution line 8" in r.detail, r
    box = r.detail.split()[1]
    assert "clicker-sandbox-" in box and not os.path.exists(box)  # removed afterwards


# --- escapes -----------------------------------------------------------------------------------


def test_socket_is_refused() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        for code in (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 1)\n",
                     f"import _socket\n_socket.socket().connect(('127.0.0.1', {port}))\n",
                     ("import urllib.request\nurllib.request.urlopen('http://example.com', "
                      "timeout=1)\n")):
            r = run(code)
            contained(r)
            assert r.detail.startswith("sandbox: blocked import"), r
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


@linux_kernel_layer
def test_kernel_layer_refuses_what_the_audit_hook_cannot_see() -> None:
    for code in ("import os\nos.pidfd_open(os.getppid())\n",  # pidfd signals skip audit events
                 "import os\nos.mkfifo('fifo')\n",  # mknod
                 "import _signal\n_signal.setitimer(0, 0.5)\n",  # timer signals
                 "import os\nos.sched_setaffinity(0, {0})\n"):
        r = run(code)
        contained(r)
        assert "Errno 1" in r.detail, r  # EPERM from the seccomp filter
    r = run("import _thread\n_thread.start_new_thread(print, ())\n")
    contained(r)
    assert "can't start new thread" in r.detail, r


def test_reading_outside_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-value")
    p = str(secret)
    home_rc = str(Path.home() / ".bashrc")
    for code in (f"print(open({p!r}).read())",
                 f"import os\nos.read(os.open({p!r}, os.O_RDONLY), 100)",
                 f"import pathlib\npathlib.Path({p!r}).read_text()",
                 f"import io\nio.open_code({p!r}).read()",
                 "open('../../../../../../../" + p.lstrip("/") + "').read()",
                 f"import os\nos.listdir({str(tmp_path)!r})",
                 "import os\nopen(os.path.expanduser('~/.bashrc')).read()",
                 f"open({home_rc!r}).read()",
                 "open('/etc/passwd').read()",
                 "open('/proc/self/environ').read()"):
        r = run(code)
        contained(r)
        assert r.detail.startswith("sandbox: blocked") and "s3cr3t" not in r.detail, (code, r)


def test_writing_outside_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "escaped"
    p = str(target)
    for code in (f"open({p!r}, 'w').write('x')",
                 f"import os\nos.close(os.open({p!r}, os.O_WRONLY | os.O_CREAT))",
                 f"import os\nos.mkdir({p!r})",
                 f"open('f', 'w').close()\nimport os\nos.rename('f', {p!r})",
                 f"import os\nos.symlink({p!r}, 'link')\nopen('link', 'w').write('x')",
                 "open('../../../../../../../" + p.lstrip("/") + "', 'w').write('x')",
                 f"import shutil\nopen('f', 'w').close()\nshutil.copy('f', {p!r})"):
        r = run(code)
        contained(r)
        assert r.detail.startswith("sandbox: blocked"), (code, r)
        assert not os.path.lexists(target), code


def test_process_creation_is_refused(tmp_path: Path) -> None:
    marker = str(tmp_path / "spawned")
    for code in ("import os\nwhile True:\n    os.fork()\n",
                 f"import subprocess\nsubprocess.Popen(['/bin/touch', {marker!r}]).wait()\n",
                 f"import os\nos.system('/bin/touch {marker}')\n",
                 f"import os\nos.posix_spawn('/bin/touch', ['touch', {marker!r}], {{}})\n",
                 f"import os\nos.execv('/bin/touch', ['touch', {marker!r}])\n",
                 "import multiprocessing\nmultiprocessing.Process(target=print).start()\n"):
        r = run(code)
        contained(r)
        assert r.detail.startswith("sandbox: blocked"), (code, r)
        assert not os.path.exists(marker), code


def test_infinite_loops_end() -> None:
    r = run("while True:\n    pass\n", cpu_s=1, wall_s=2)
    contained(r)
    assert r.status in ("timeout", "killed") and r.seconds < 2 + 5, r
    r = run("import time\ntime.sleep(60)\n", cpu_s=1, wall_s=1.5)
    assert r.status == "timeout" and r.seconds < 1.5 + 5, r


def test_unbounded_memory_is_stopped() -> None:
    r = run("x = []\nwhile True:\n    x.append(' ' * 10**7)\n", memory_mb=256)
    contained(r)
    assert r.status in ("error", "killed") and ("MemoryError" in r.detail or r.status == "killed")


def test_huge_file_inside_is_stopped_by_the_file_size_limit() -> None:
    r = run("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)\n",
            file_mb=1)
    contained(r)
    assert "File too large" in r.detail, r


def test_signals_to_other_processes_are_refused() -> None:
    decoy = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        before = resource.prlimit(decoy.pid, resource.RLIMIT_NOFILE)
        pid = decoy.pid
        for code in (f"import os\nos.kill({pid}, 9)",
                     f"import os\nos.killpg({pid}, 9)",
                     f"import os, _signal\n_signal.pidfd_send_signal(os.pidfd_open({pid}), 9)",
                     f"import resource\nresource.prlimit({pid}, resource.RLIMIT_NOFILE, (3, 3))",
                     "import os\nos.kill(os.getppid(), 9)",  # the parent: this test process
                     "import os\nos.killpg(os.getpgid(os.getppid()), 9)"):
            contained(run(code))
            assert decoy.poll() is None, code
        assert resource.prlimit(decoy.pid, resource.RLIMIT_NOFILE) == before
    finally:
        decoy.kill()
        decoy.wait()


def test_ctypes_and_foreign_extension_modules_are_refused() -> None:
    for code in ("import ctypes\nctypes.CDLL(None).getpid()\n",
                 "import _ctypes\n",
                 ("import importlib.machinery as m\nopen('x.so', 'wb').write(b'\\x7fELF')\n"
                  "loader = m.ExtensionFileLoader('x', 'x.so')\n"
                  "loader.create_module(m.ModuleSpec('x', loader, origin='x.so'))\n"),
                 "import sys\nsys.settrace(lambda *a: None)\n",
                 "import gc\ngc.get_objects()\n"):
        r = run(code)
        contained(r)
        assert r.detail.startswith("sandbox: blocked"), (code, r)


# --- the code task -----------------------------------------------------------------------------


def test_code_problems_are_deterministic_and_splits_differ() -> None:
    a, b, c = CodeTask(), CodeTask(), CodeTask(seed=1)
    train = [a.problem("train", i) for i in range(300)]
    assert train == [b.problem("train", i) for i in range(300)]
    assert [p.prompt for p in train] != [c.problem("train", i).prompt for i in range(300)]
    test = {a.problem("test", i).prompt for i in range(300)}
    assert test and not test & {p.prompt for p in train}
    assert {p.meta["template"] for p in train} == {t.name for t in TEMPLATES}
    text = a.warmup_text(3, random.Random(0))
    assert text.startswith(a.problem("train", 3).prompt) and text.endswith(STOP)


def test_every_template_reference_passes_and_a_constant_fails() -> None:
    task, seen = CodeTask(wall_s=5), {}
    for i in range(500):
        p = task.problem("train", i)
        seen.setdefault(p.meta["template"], p)
    assert set(seen) == {t.name for t in TEMPLATES}
    for name, p in seen.items():
        v = task.verify(p, p.reference + STOP)
        n = len(p.meta["cases"])
        assert v.reward == 1.0 and v.feedback == f"all {n} cases passed", (name, v)
        v = task.verify(p, "    return 0" + STOP)
        assert v.reward == 0.0 and v.feedback.startswith("returned 0 for ("), (name, v)


def test_code_task_through_make_world() -> None:
    assert TASKS["code"] is CodeTask
    w = make_world("code", seed=2, wall_s=5)
    env = w.make("test", 0)
    prompt = env.reset()
    assert prompt.startswith("# ") and "\ndef " in prompt and w.stop == (STOP,)
    step = env.step(w.reference("test", 0) + STOP)
    assert step.done and step.reward == 1.0
    step = w.make("test", 0).step("    return None" + STOP)
    assert step.done and step.reward == 0.0 and step.feedback.startswith("returned null for (")


# --- reward hacking: the expected outputs never enter the sandbox ----------------------------

FORGE = """    import os, sys
    frame = sys._getframe()
    while "nonce" not in frame.f_locals:  # up to the runner's main(): nonce, verdict channel
        frame = frame.f_back
    os.write(frame.f_locals["verdict"], (frame.f_locals["nonce"] + " {line}\\n").encode())
    os._exit(0)
"""


def _add7() -> tuple[CodeTask, object]:
    task = CodeTask(wall_s=5)
    p = next(p for i in range(500) if (p := task.problem("train", i)).meta["template"] == "add")
    return task, p


def test_a_runner_introspecting_program_forges_an_assert_pass_but_not_a_code_verdict() -> None:
    """The test mode runs asserts beside the program, which can walk up to the runner and write
    its PASS line (the limit the sandbox's docstring states); the code task's verifier compares
    outputs in the parent, so the same forgery, or a forged list of outputs, earns nothing."""
    task, p = _add7()
    header = p.prompt
    forged = run_sandboxed(header + FORGE.format(line="PASS"), "add(0)\nassert False")
    assert forged.passed  # the documented limit of the test mode
    for line in ("PASS", "OUT [0, 0, 0, 0, 0, 0, 0]", "OUT not json"):
        v = task.verify(p, FORGE.format(line=line) + STOP)
        assert v.reward == 0.0, (line, v)
    right = [want for _, want in p.meta["cases"]]  # the forgery reaches the parent: only the
    v = task.verify(p, FORGE.format(line=f"OUT {right}") + STOP)  # right outputs, i.e. solving
    assert v.reward == 1.0, v


@pytest.mark.parametrize("body", [
    "    class Yes:\n        def __eq__(self, other): return True\n    return Yes()",
    "    class Int(int):\n        def __eq__(self, other): return True\n    return Int(0)",
    "    return str(x + {k})",  # the right digits, the wrong type
])
def test_objects_that_claim_equality_do_not_pass(body: str) -> None:
    task, p = _add7()
    v = task.verify(p, body.format(k=p.meta["param"]) + STOP)
    assert v.reward == 0.0, v
    assert task.verify(p, p.reference + STOP).reward == 1.0
