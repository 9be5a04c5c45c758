"""How the sandboxed interpreter is started: inside bubblewrap, or (chosen explicitly) as a plain
subprocess. Everything here builds command lines and starts processes; supervising them (output
caps, the timeout, the disk cap) is the caller's job (``synthesis.sandbox``).

The bubblewrap sandbox:

- namespaces: user, mount, PID, network, IPC, UTS and cgroup, all new. The network namespace has
  only its own loopback, so nothing on the host (127.0.0.1 included) or beyond can be reached.
- filesystem: a fresh root holding /usr (and the /bin, /lib, ... links or folders beside it),
  /etc/ld.so.cache, the Python installation (the venv and its base interpreter, read-only, at
  their own paths), the code read-only at /code, the working folder read-write at /sandbox, a
  fresh /proc, a minimal /dev, and size-capped tmpfs /tmp and /dev/shm. Nothing else of the host
  (no /work, /root, /home, /tmp, /etc) exists inside.
- the code runs as uid/gid 65534 with no capabilities and no_new_privs; nested user namespaces
  are refused; rlimits (prlimit) cap its address space, processes+threads, file size and CPU.
- lifetime: bwrap's own init is PID 1 of the sandbox's PID namespace. bwrap exits when the
  code's main process has (or when we kill it, or when we die: ``--die-with-parent``); PID 1,
  tied to bwrap the same way, then dies, and with it the kernel kills every process left in the
  namespace, detached daemons included. The caller waits for PID 1 to be gone.
- nothing of the caller's environment reaches the sandbox (bwrap itself gets only PATH); the
  sandbox's session is scheduled at the caller's session's nice value (autogroup).

RLIMIT_NPROC exempts processes whose real uid is the host's root. So the sandboxed processes
must not be host root:

- run by an ordinary user, bwrap maps uid 65534 inside to that user; each sandbox has a new user
  namespace, so the process cap counts this sandbox's processes only.
- run by root, bwrap is told to wait (``--userns-block-fd``) while we write the user
  namespace's maps ourselves: 0 -> 0 (bwrap's own setup, which must read paths such as a Python
  under /root) and 65534 -> 65534. The command then drops to 65534 with ``setpriv`` before the
  code starts, so the code runs as the host's unprivileged uid 65534 and the cap applies.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SANDBOX_UID = 65534  # "nobody": the code's uid and gid inside (and on the host when we are root)
WORKDIR_INSIDE = "/sandbox"  # the code's working folder (input files, what it writes)
CODE_INSIDE = "/code"  # the code itself, read-only, outside the working folder
SCRIPT_NAME = "main.py"
TMPFS_BYTES = 64 << 20  # /tmp and /dev/shm inside live in memory: capped so they cannot fill it
UNSAFE_MODE_SETTING = "sandbox.mode=unsafe_subprocess"

# Top-level system folders that are symlinks into /usr on merged-/usr systems and real folders on
# older ones; either way the dynamic loader and /bin/sh need them.
SYSTEM_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

# Set in the sandbox instead of the caller's environment (nothing of which is passed on): the
# same code gives the same output anywhere (hash seed, time zone, locale, one BLAS thread, which
# also keeps numpy inside the address-space cap).
SANDBOX_ENV = {
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
}


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be made on this machine; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_bytes: int
    max_processes: int
    max_file_bytes: int

    def prlimit_args(self, prlimit: str) -> list[str]:
        # CPU seconds are a backstop for the wall-clock kill (which the caller does); a few
        # seconds beyond it so the wall clock, not the CPU limit, decides in the normal case.
        cpu_seconds = math.ceil(self.timeout_s) + 5
        return [
            prlimit,
            f"--as={self.memory_bytes}",
            f"--nproc={self.max_processes}",
            f"--fsize={self.max_file_bytes}",
            f"--cpu={cpu_seconds}",
            "--core=0",
            "--",
        ]


@dataclass
class Launched:
    """A started sandbox: the process to supervise, and where bwrap reports its status."""

    process: subprocess.Popen
    status_fd: int | None  # bwrap's --json-status-fd, read end; None for a plain subprocess

    def finish(self, wait_s: float = 10.0) -> bool:
        """After the process ended: whether bwrap got as far as starting the code (it reports an
        exit code only then). Closes the status pipe.

        Also waits (up to `wait_s`) until the sandbox's PID 1 is gone. bwrap exits as soon as the
        code's main process has; its PID 1 then dies of the parent-death signal, taking with it
        (the kernel does that) every process left in its PID namespace. Afterwards nothing of
        the sandbox is running."""
        if self.status_fd is None:
            return True
        chunks = []
        try:
            while chunk := os.read(self.status_fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(self.status_fd)
            self.status_fd = None
        started_code, sandbox_init, pid_namespace = False, None, None
        for line in b"".join(chunks).decode(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            started_code |= "exit-code" in record
            sandbox_init = record.get("child-pid", sandbox_init)
            pid_namespace = record.get("pid-namespace", pid_namespace)
        if sandbox_init is not None and pid_namespace is not None:
            _wait_until_gone(int(sandbox_init), f"pid:[{pid_namespace}]", wait_s)
        return started_code


def _wait_until_gone(pid: int, pid_namespace: str, wait_s: float) -> None:
    """Wait until host process `pid`, PID 1 of `pid_namespace`, has exited (a zombie waiting
    for the host's init to reap it counts as exited; a process that got the same number later
    is told apart by its namespace)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != pid_namespace:
                return
        except (FileNotFoundError, ProcessLookupError):
            return  # gone, or a zombie (which has no namespaces left)
        except PermissionError:
            pass  # cannot tell; its state below can
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        if state in (b"Z", b"X"):
            return
        time.sleep(0.002)
    raise RuntimeError(f"the sandbox's PID 1 (host pid {pid}) was still running {wait_s} s after bwrap ended")


def sandbox_python() -> str:
    """The interpreter the code runs with: this process's own (a venv's python is started by its
    path in the venv, so the venv's site-packages, with PIL and numpy, are used)."""
    if sys.prefix != sys.base_prefix:
        return str(Path(sys.prefix).resolve() / "bin" / Path(sys.executable).name)
    return os.path.realpath(sys.executable)


def python_roots() -> list[str]:
    """Folders of the Python installation to bind read-only: the venv and its base interpreter
    (its standard library and shared libraries), outermost only, those under /usr left out."""
    candidates = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    candidates.add(str(Path(os.path.realpath(sys.executable)).parent.parent))
    roots: list[str] = []
    for path in sorted(candidates, key=len):
        if path == "/" or _is_within(path, "/usr") or any(_is_within(path, root) for root in roots):
            continue
        roots.append(path)
    return sorted(roots)


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _tool(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        raise SandboxUnavailable(f"{name} was not found (util-linux); it is needed to set the sandbox's limits")
    return os.path.realpath(path)


def bwrap_command(limits: Limits, script_dir: Path, workdir: Path, *, as_root: bool,
                  info_fd: int = -1, block_fd: int = -1, status_fd: int = -1) -> list[str]:
    """The bwrap command line that runs ``script_dir/main.py`` in ``workdir``. With ``as_root``
    the caller must write the user namespace's maps (see ``start_bwrap``)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(_missing_bwrap_message())
    args = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--hostname", "sandbox", "--json-status-fd", str(status_fd), "--clearenv"]
    env = dict(SANDBOX_ENV, HOME=WORKDIR_INSIDE, TMPDIR="/tmp",
               PATH=f"{Path(sandbox_python()).parent}:/usr/bin:/bin", MPLCONFIGDIR="/tmp/matplotlib")
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    if as_root:
        # bwrap waits on block_fd until we have written the maps for the pid it reports on
        # info_fd; its setup keeps only what the sh + setpriv prelude below needs.
        args += ["--userns-block-fd", str(block_fd), "--info-fd", str(info_fd), "--cap-drop", "ALL"]
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SYS_RESOURCE"):
            args += ["--cap-add", cap]
    else:
        args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--disable-userns"]

    args += ["--ro-bind", "/usr", "/usr"]
    for name in SYSTEM_TOP_LEVEL:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    made: set[str] = set()
    for root in python_roots():
        # bwrap would create the mount point's parents with the host's modes (/root is 0700),
        # which uid 65534 could not cross; make them 0755 first.
        for parent in reversed(PurePosixPath(root).parents):
            if str(parent) != "/" and str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", root, root]
    args += ["--ro-bind", str(script_dir), CODE_INSIDE,
             "--bind", str(workdir), WORKDIR_INSIDE, "--chdir", WORKDIR_INSIDE,
             "--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/dev/shm",
             "--remount-ro", "/dev",
             "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",
             # The new root is a tmpfs of its own; read-only, nothing can be stored in it (RAM).
             "--remount-ro", "/",
             "--"]
    prelude = _autogroup_nice_command()
    if as_root:
        # Still root of the sandbox's user namespace (mapped to host root): forbid further user
        # namespaces, then become 65534 with no capabilities before anything of the code runs.
        prelude += "echo 0 > /proc/sys/user/max_user_namespaces && "
    if prelude:
        args += ["/bin/sh", "-c", prelude + 'exec "$@"', "sh"]
    if as_root:
        args += [_tool("setpriv"), f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    args += limits.prlimit_args(_tool("prlimit"))
    args += [sandbox_python(), "-s", "-B", "-u", f"{CODE_INSIDE}/{SCRIPT_NAME}"]
    return args


def maps_sandbox_user() -> bool:
    """Whether we write the sandbox's user maps ourselves (and give it host uid 65534): as root
    of a user namespace that has uid 65534 (the host's root does). Root of a namespace without
    it (a rootless container) starts bwrap like an ordinary user."""
    if os.geteuid() != 0:
        return False
    with open("/proc/self/uid_map") as handle:
        for line in handle:
            inside, _, count = (int(number) for number in line.split())
            if inside <= SANDBOX_UID < inside + count:
                return True
    return False


def caller_session_niceness() -> int:
    """The nice value (0..19) of this process's scheduling group where the kernel groups
    scheduling by session (autogroup); 0 elsewhere."""
    try:
        with open("/proc/self/autogroup") as handle:
            return min(max(int(handle.read().split("nice")[1]), 0), 19)
    except (OSError, IndexError, ValueError):
        return 0


def _autogroup_nice_command() -> str:
    """Shell that schedules the sandbox as its caller's session is scheduled. With autogroup
    scheduling every session is a group of its own: bwrap's --new-session would put the sandbox
    in a new group at nice 0, and a caller whose session runs niced would lose that. (Within a
    group each process keeps its nice value, which the sandbox inherits from us anyway; between
    groups only the group's value counts, so nice(1) alone changes nothing against other
    sessions, for the caller and sandbox alike.)"""
    niceness = caller_session_niceness()
    if niceness == 0:
        return ""
    # The kernel takes one such change per 0.1 s machine-wide (EAGAIN otherwise): a few tries,
    # then the sandbox runs at the default rather than not at all.
    return (f"tries=0; until echo {niceness} > /proc/self/autogroup; do tries=$((tries + 1)); "
            f"[ $tries -ge 6 ] && break; sleep 0.05; done 2>/dev/null; ")


def start_bwrap(limits: Limits, script_dir: Path, workdir: Path) -> Launched:
    as_root = maps_sandbox_user()
    status_read, status_write = os.pipe()
    fds_for_bwrap = [status_write]
    info_read = info_write = block_read = block_write = -1
    if as_root:
        info_read, info_write = os.pipe()
        block_read, block_write = os.pipe()
        fds_for_bwrap += [info_write, block_read]
    command = bwrap_command(limits, script_dir, workdir, as_root=as_root, info_fd=info_write,
                            block_fd=block_read, status_fd=status_write)
    try:
        # bwrap gets no environment of ours: its init stays PID 1 of the sandbox, and a process's
        # initial environment stays readable in /proc/PID/environ whatever --clearenv does.
        # A process group of its own (so the whole of it can be killed), not a new session (a
        # session is a scheduling group of its own under autogroup; see _autogroup_nice_command).
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, pass_fds=fds_for_bwrap, process_group=0,
                                   env={"PATH": "/usr/bin:/bin"})
    except BaseException:
        for fd in (status_read, status_write, info_read, info_write, block_read, block_write):
            if fd >= 0:
                os.close(fd)
        raise
    for fd in fds_for_bwrap:
        os.close(fd)
    if as_root:
        try:
            _map_sandbox_user(info_read)
        finally:
            os.close(info_read)
            # Releases bwrap; if the maps were not written, its setup fails with a message.
            try:
                os.write(block_write, b"1")
            except BrokenPipeError:
                pass
            os.close(block_write)
    return Launched(process, status_read)


def _map_sandbox_user(info_read: int) -> None:
    """Write the maps of the user namespace bwrap made (its pid arrives on the info pipe)."""
    chunks = []
    while chunk := os.read(info_read, 65536):
        chunks.append(chunk)
    if not chunks:
        return  # bwrap stopped before making the namespace; its stderr says why
    child_pid = json.loads(b"".join(chunks))["child-pid"]
    mapping = f"0 0 1\n{SANDBOX_UID} {SANDBOX_UID} 1\n".encode()
    for name in ("uid_map", "gid_map"):
        # One write(2) per map: the kernel accepts a map only whole and only once.
        fd = os.open(f"/proc/{child_pid}/{name}", os.O_WRONLY)
        try:
            os.write(fd, mapping)
        finally:
            os.close(fd)


def start_unsafe(limits: Limits, script_dir: Path, workdir: Path, tmpdir: Path) -> Launched:
    """A plain subprocess with the same rlimits and environment: no namespaces, so the code can
    read and write whatever this user can, reach the network, and leave daemons behind."""
    env = dict(SANDBOX_ENV, HOME=str(workdir), TMPDIR=str(tmpdir), MPLCONFIGDIR=str(tmpdir / "matplotlib"),
               PATH=f"{Path(sandbox_python()).parent}:/usr/bin:/bin")
    command = limits.prlimit_args(_tool("prlimit")) + [sandbox_python(), "-s", "-B", "-u",
                                                        str(script_dir / SCRIPT_NAME)]
    # Its own process group, for the kill; in our session, so it is scheduled with us.
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=workdir, env=env, process_group=0)
    return Launched(process, None)


def chown_for_sandbox(paths: Sequence[Path]) -> None:
    """Run by root, the code is host uid 65534: give it what it must write (the working folder
    and the inputs in it, which it may change)."""
    if not maps_sandbox_user():
        return
    for top in paths:
        os.chown(top, SANDBOX_UID, SANDBOX_UID)
        for folder, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                os.chown(os.path.join(folder, name), SANDBOX_UID, SANDBOX_UID, follow_symlinks=False)


def _missing_bwrap_message() -> str:
    return ("bubblewrap (bwrap) is not installed, so model-written code cannot be isolated. Install it "
            "(Debian/Ubuntu: apt-get install bubblewrap; `make` set-up does this), or set "
            f"{UNSAFE_MODE_SETTING} to run the code as a plain subprocess with rlimits only (no isolation).")


def unavailable_message(detail: str) -> str:
    return (f"bubblewrap cannot make the sandbox on this machine: {detail.strip()}\n"
            "It needs user namespaces (unprivileged ones when not run as root; inside Docker, a seccomp "
            "profile that allows them). Fix that, or set "
            f"{UNSAFE_MODE_SETTING} to run the code as a plain subprocess with rlimits only (no isolation).")


def bwrap_version() -> str:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(_missing_bwrap_message())
    done = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise SandboxUnavailable(unavailable_message(f"`bwrap --version` failed: {done.stderr}"))
    return done.stdout.strip()
