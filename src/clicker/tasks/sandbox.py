"""Run model-written Python and its tests in a contained child process.

`run_sandboxed` runs `python -I -S -B` (no site, user paths or environment variables) in a new
session with an empty environment, in an empty temporary directory removed afterwards. Only a last
output line `<nonce> PASS` (a random nonce the program is never shown) passes. Layers, outermost:
- a wall-clock timeout, after which the whole process group is killed;
- rlimits: CPU seconds (soft = hard: an uncatchable SIGKILL), address space, file size (which also
  caps what the child writes back), open files, processes, no core dumps;
- Linux, best effort: as root, a network namespace with no interface up; an empty capability
  bounding set, so even a root child has no capabilities after exec; a seccomp filter refusing
  new processes and threads, signals, tracing and pidfds aimed at other processes, sockets,
  device nodes, timers, others' scheduling, namespaces and mounts;
- in the child, before the model's code runs, an audit hook (it cannot be removed) refusing
  process creation, signals, sockets, ctypes and foreign extension modules, tracing, object-graph
  walks, code construction, unmarshalling, writes outside the directory and reads outside it and
  the standard library. A refusal ends the run at once with a FAIL verdict: no catching it.

Not a container: same kernel, same user (root stays root, without capabilities), and the file
rules live only in the audit hook, a CPython-level guard. Native code could bypass it (hence no
ctypes, and the kernel layers), as could a program that corrupts the interpreter's memory
(crafted bytecode via `code.replace`, unaudited in CPython 3.11, or a known crasher); such a
program can read and write what a capability-less root may. Metadata (stat, readlink) outside
the directory is not hidden; without root there is no network namespace. The nonce is in the
child's memory, so a program that introspects the runner could find it and forge a PASS in
`run_sandboxed`'s test mode (as could an `__eq__` that always agrees with an `assert`). Verifiers
of model-written code therefore use `run_cases`: the child only calls the function and sends its
outputs back as JSON; the expected outputs never enter it and the parent compares. A forged
verdict then has to contain the right outputs, which is solving the problem.
`preexec_fn` (Python between fork and exec) can deadlock if another parent thread holds a lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import resource
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["passed", "failed", "error", "timeout", "killed"]
TAIL_BYTES = 65536  # of the child's stdout and stderr read back; the verdict is the last line


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one run. `processes` is RLIMIT_NPROC (0: no new processes); root is
    exempt from it, which is why the audit hook and the seccomp filter refuse forks anyway."""

    cpu_s: int = 2
    memory_mb: int = 256
    processes: int = 0
    file_mb: int = 1
    wall_s: float = 5.0
    open_files: int = 32


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: Status  # passed, failed (an assertion or a wrong output), error, timeout, killed
    detail: str  # one line
    seconds: float


_RUNNER = r'''
import io, json, os, sys

def guard(box, libs, nonce, verdict):
    # The audit hook closes only over immutable values and builtins bound here, and keeps its
    # working data in strings and tuples: model code that patches builtins, os or posixpath, or
    # reaches the hook's frame from a finalizer, finds nothing in it to change.
    str_, bytes_, int_, tuple_, isinstance_, OSError_ = str, bytes, int, tuple, isinstance, OSError
    lstat, write, exit_, enc = os.lstat, os.write, os._exit, sys.getfilesystemencoding()
    deny = frozenset("""os.fork os.forkpty os.posix_spawn os.spawn os.exec os.system os.kill
        os.killpg signal.pthread_kill os.symlink os.link os.chdir os.chroot resource.setrlimit
        resource.prlimit sys.settrace sys.setprofile gc.get_objects gc.get_referrers
        gc.get_referents code.__new__ marshal.load marshal.loads cpython.PyInterpreterState_New
        """.split())
    deny_prefixes = ("socket.", "ctypes.", "subprocess.", "sqlite3.", "sys.monitoring")
    deny_modules = frozenset("""ctypes _ctypes socket _socket ssl _ssl subprocess _posixsubprocess
        multiprocessing _multiprocessing _posixshmem fcntl pty pwd grp spwd sqlite3 _sqlite3 dbm
        _dbm _gdbm readline _curses _tkinter syslog""".split())
    in_box = frozenset("""os.remove os.rmdir os.mkdir os.chmod os.chown os.rename os.truncate
        os.utime os.setxattr os.removexattr os.chflags""".split())
    reads = frozenset("os.listdir os.scandir os.listxattr os.getxattr".split())
    wbits = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    boxed, readable, blocked = (box,), (box,) + libs, nonce + " FAIL sandbox: blocked "

    def hook(event, args):
        why, checks = "", ()
        if event in deny or str_.startswith(event, deny_prefixes):
            why = event
        elif event == "import":
            name = str_.rpartition(str_.__str__(args[0]), ".")[2]
            if name in deny_modules or str_.startswith(name, ("_test", "_xx")):
                why = "import " + name
            elif args[1] is not None:  # an extension module's file: the standard library's only
                checks = ((args[1], libs),)
        elif event == "open":
            mode = args[1] if isinstance_(args[1], str_) else ""
            writing = args[2] & wbits or "w" in mode or "a" in mode or "x" in mode or "+" in mode
            checks = ((args[0], boxed if writing else readable),)
        elif event in in_box:
            checks = tuple_((path, boxed) for path in args[:2 if event == "os.rename" else 1])
        elif event in reads:
            checks = ((args[0], readable),)
        for path, roots in checks:
            if why or isinstance_(path, int_):  # an fd was checked when it was opened
                continue
            path = "." if path is None else path
            p = (bytes_.decode(path, enc, "surrogateescape") if isinstance_(path, bytes_)
                 else str_.__str__(path))
            parts = tuple_(str_.split(p if str_.startswith(p, "/") else box + "/" + p, "/"))
            norm = "/" + "/".join(part for part in parts if part and part != ".")
            root = ([r for r in roots if norm == r or str_.startswith(norm, r + "/")] or [""])[0]
            if ".." in parts or not root:  # with "..", the kernel and a lexical check can differ
                why = event + " " + p
                continue
            prefix = root
            for part in str_.split(norm[len(root):], "/"):  # below the root: no symlinks
                prefix = prefix + "/" + part if part else prefix
                try:
                    kind = lstat(prefix).st_mode & 0o170000
                except OSError_:
                    break
                if kind == 0o120000 or (kind == 0o040000 and event == "open" and prefix == norm):
                    why = event + " " + p  # a symlink, or a directory fd (for dir_fd tricks)
        if why:
            write(verdict, str_.encode(blocked + why + "\n", "utf-8", "replace"))
            exit_(0)

    sys.addaudithook(hook)

def describe(e, phase, source):
    # One line: the exception, and the line of `phase`'s source it was raised from.
    lineno, tb = None, e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<" + phase + ">":
            lineno = tb.tb_lineno
        tb = tb.tb_next
    e.__traceback__ = None  # free the program's frames (a MemoryError's hoard) before formatting
    message, lines = str(e), source.splitlines()  # str() may raise: main() catches that
    text = type(e).__name__ + (": " + message if message else "")
    if lineno is not None and 0 < lineno <= len(lines):
        text += " [" + phase + " line " + str(lineno) + ": " + lines[lineno - 1].strip() + "]"
    return " ".join(text.split())[:300]

def main():
    job = json.loads(sys.stdin.buffer.read())
    os.close(0)
    write, exit_, nonce = os.write, os._exit, job.pop("nonce")
    verdict = os.dup(1)  # the verdict's channel; the program's fd 1 goes to the stderr capture
    os.dup2(2, 1)
    box, libs = os.getcwd(), tuple(sorted({os.path.realpath(p) for p in sys.path if p}))
    sys.pycache_prefix = box + "/.pycache"  # absent: imports compile source, never unmarshal
    sys.setrecursionlimit(1000)
    sys.stdout = sys.stderr = io.StringIO()
    guard(box, libs, nonce, verdict)
    ns, phase, call, dumps, len_ = {"__name__": "__sandbox__"}, "solution", "", json.dumps, len
    try:
        exec(compile(job["code"], "<solution>", "exec"), ns)
        if "function" in job:  # cases: return the outputs; the parent alone knows the answers
            outputs = []
            for args in job["args"]:
                call = job["function"] + "(" + ", ".join(map(repr, args)) + ") raised "
                text = dumps(ns[job["function"]](*args))  # plain data only, never an __eq__
                outputs.append(text if len_(text) <= 2000 else dumps(str(len_(text)) + " chars"))
            line = "OUT [" + ",".join(outputs) + "]"
        else:
            phase = "tests"
            exec(compile(job["tests"], "<tests>", "exec"), ns)
            line = "PASS"
    except BaseException as e:  # SystemExit and KeyboardInterrupt fail too
        ns.clear()
        try:
            line = "FAIL " + call + describe(e, phase, job["code" if phase == "solution" else
                                                         "tests"])
        except BaseException:
            line = "FAIL unprintable exception"
    write(verdict, (nonce + " " + line + "\n").encode("utf-8", "replace"))
    exit_(0)  # skip atexit handlers and finalizers the program may have left

main()
'''

_ARCH = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}  # column, AUDIT_ARCH_*
# Syscalls refused, by x86_64 and aarch64 number (None: absent): new processes and threads; tracing,
# pidfds, queued signals; sockets; device nodes; timers (a signal could land inside the audit
# hook); others' scheduling; namespaces, mounts; attack surface; io_uring, invisible to seccomp.
_DENIED = {
    "fork": (57, None), "vfork": (58, None), "clone": (56, 220), "clone3": (435, 435),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438),
    "rt_sigqueueinfo": (129, 138), "rt_tgsigqueueinfo": (297, 240), "socket": (41, 198),
    "socketpair": (53, 199), "mknod": (133, None), "mknodat": (259, 33), "alarm": (37, None),
    "setitimer": (38, 103), "timer_create": (222, 107), "setpriority": (141, 140),
    "ioprio_set": (251, 30), "sched_setparam": (142, 118), "sched_setscheduler": (144, 119),
    "sched_setaffinity": (203, 122), "sched_setattr": (314, 274), "unshare": (272, 97),
    "setns": (308, 268), "mount": (165, 40), "chroot": (161, 51), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "io_uring_setup": (425, 425)}
# Allowed only on the child itself (first argument 0 or its own pid): kill tkill tgkill prlimit64.
_SELF_ONLY = ((62, 129), (200, 130), (234, 131), (302, 261))
_LD, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, JGE|K, BPF_RET|K
_ALLOW, _EPERM = 0x7FFF0000, 0x00050001  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
if _LIBC is not None:
    _LIBC.prctl, _LIBC.unshare  # noqa: B018 - look the symbols up now, not after fork


def seccomp_program(pid: int) -> list[tuple[int, int, int, int]] | None:
    """The BPF filter for this machine (None where the syscall table is not known)."""
    if sys.platform != "linux" or os.uname().machine not in _ARCH:
        return None
    col, arch = _ARCH[os.uname().machine]
    deny, allow = (_RET, 0, 0, _EPERM), (_RET, 0, 0, _ALLOW)
    prog = [(_LD, 0, 0, 4), (_JEQ, 1, 0, arch), deny, (_LD, 0, 0, 0)]  # other ABIs: refuse all
    if col == 0:
        prog += [(_JGE, 0, 1, 0x40000000), deny]  # x32 numbers alias the x86_64 table
    for nrs in _DENIED.values():
        if nrs[col] is not None:
            prog += [(_JEQ, 0, 1, nrs[col]), deny]
    for nrs in _SELF_ONLY:  # load the low 32 bits of argument 0; pass 0 or our pid
        prog += [(_JEQ, 0, 5, nrs[col]), (_LD, 0, 0, 16), (_JEQ, 2, 0, pid), (_JEQ, 1, 0, 0),
                 deny, allow]
    return [*prog, allow]


def _confine(limits: SandboxLimits) -> None:
    """preexec_fn. Namespace, capabilities, seccomp: best effort. The rlimits must succeed."""
    if _LIBC is not None:
        libc, ul = _LIBC, ctypes.c_ulong
        if os.geteuid() == 0:
            libc.unshare(0x40000000)  # CLONE_NEWNET: a network namespace with no interfaces up
        for cap in [*range(8), *range(9, 64), 8]:  # CAP_SETPCAP (8), needed to drop, goes last
            libc.prctl(ul(24), ul(cap), ul(0), ul(0), ul(0))  # PR_CAPBSET_DROP
        prog = seccomp_program(os.getpid())
        if prog is not None and libc.prctl(ul(38), ul(1), ul(0), ul(0), ul(0)) == 0:
            # PR_SET_NO_NEW_PRIVS done; PR_SET_SECCOMP with a struct sock_fprog {len, filter*}
            table = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in prog))
            fprog = struct.pack("@HP", len(prog), ctypes.addressof(table))
            libc.prctl(ul(22), ul(2), fprog, ul(0), ul(0))
    r, mb = resource, 1 << 20
    for res, value in ((r.RLIMIT_CORE, 0), (r.RLIMIT_CPU, limits.cpu_s),
                       (r.RLIMIT_NPROC, limits.processes), (r.RLIMIT_FSIZE, limits.file_mb * mb),
                       (r.RLIMIT_NOFILE, limits.open_files),
                       (r.RLIMIT_AS, limits.memory_mb * mb)):  # last: the forked parent is big
        r.setrlimit(res, (value, value))


def run_sandboxed(code: str, tests: str, *, limits: SandboxLimits = SandboxLimits()
                  ) -> SandboxResult:
    """Run `code` then `tests` (plain Python; a failing `assert` fails) in a fresh sandbox.
    Raises OSError or SubprocessError when the sandbox itself cannot start: not the code's fault.
    The tests run beside the code: see the module's note on introspection, and `run_cases`."""
    return _run({"code": code, "tests": tests}, limits, None)


def run_cases(code: str, function: str, cases: Sequence[tuple[Sequence[Any], Any]], *,
              limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code`, then call `function(*args)` for each `(args, expected)` of `cases` in the
    sandbox, and compare the outputs with `expected` here, in the parent, as JSON text: a
    subclass or an object with its own `__eq__` cannot pass, and `1` is not `true`. Arguments
    and expected values must be JSON data (str, int, float, bool, None, lists, dicts)."""
    cases = [(list(args), json.dumps(expected)) for args, expected in cases]
    job = {"code": code, "function": function, "args": [args for args, _ in cases]}
    return _run(job, limits, cases)


def _run(job: dict, limits: SandboxLimits, cases: list[tuple[list, str]] | None) -> SandboxResult:
    start, nonce = time.monotonic(), secrets.token_hex(16)
    box = tempfile.mkdtemp(prefix="clicker-sandbox-")
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            job = json.dumps({**job, "nonce": nonce}).encode()
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-c", _RUNNER], stdin=subprocess.PIPE,
                stdout=out, stderr=err, cwd=box, env={"PATH": "/usr/bin:/bin"},
                start_new_session=True,
                preexec_fn=functools.partial(_confine, limits))  # noqa: PLW1509 - see the top
            timed_out = False
            try:
                proc.communicate(job, timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:  # also when the caller's own timeout interrupts us
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            status, detail = _judge(proc.returncode, timed_out, _tail(out), _tail(err), nonce,
                                    limits, cases)
    finally:
        shutil.rmtree(box, ignore_errors=True)
    return SandboxResult(status == "passed", status, detail, time.monotonic() - start)


def _tail(f) -> str:
    f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
    return f.read().decode("utf-8", "replace")


def _judge(rc: int, timed_out: bool, out: str, err: str, nonce: str, limits: SandboxLimits,
           cases: list[tuple[list, str]] | None) -> tuple[Status, str]:
    if timed_out:
        return "timeout", f"timed out: wall-clock limit of {limits.wall_s:g} s"
    last = (out.splitlines() or [""])[-1]
    if rc == 0 and cases is None and last == f"{nonce} PASS":
        return "passed", "all tests passed"
    if rc == 0 and cases is not None and last.startswith(f"{nonce} OUT "):
        return _compare(last[len(nonce) + 5:], cases)
    if last.startswith(f"{nonce} FAIL "):
        reason = last[len(nonce) + 6:]
        return ("failed" if reason.startswith("AssertionError") else "error"), reason
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in set(signal.Signals) else f"signal {-rc}"
        cpu = f" (likely the {limits.cpu_s} s CPU-time limit)" if -rc == signal.SIGKILL else ""
        return "killed", f"killed by {name}{cpu}"
    why = ([ln for ln in err.splitlines() if ln.strip()] or ["no output"])[-1]
    return "error", " ".join(f"exit status {rc} without a verdict: {why}".split())[:300]


def _compare(text: str, cases: list[tuple[list, str]]) -> tuple[Status, str]:
    """The child's outputs (a JSON list, one per case) against the expected JSON texts."""
    try:
        outputs = [json.dumps(o) for o in json.loads(text)]
    except ValueError:
        return "error", "the outputs are not JSON"
    if len(outputs) != len(cases):
        return "error", f"{len(outputs)} outputs for {len(cases)} cases"
    for (args, want), got in zip(cases, outputs, strict=True):
        if got != want:
            call = ", ".join(map(repr, args))
            return "failed", " ".join(f"returned {got} for ({call}), expected {want}".split())[:300]
    return "passed", f"all {len(cases)} cases passed"
