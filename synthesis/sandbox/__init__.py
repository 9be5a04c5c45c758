"""The sandbox for model-written code: ``run_python(code, files=...) -> SandboxResult``.

    from synthesis.sandbox import run_python
    result = run_python("from PIL import Image\\nImage.open('image_0.png').rotate(90).save('out.png')",
                        files={"image_0.png": png_bytes})
    result.ok, result.stdout, result.files["out.png"]

    python -m synthesis.sandbox run FILE.py [--timeout S] [--memory-mb M] [--files DIR]
    python -m synthesis.sandbox check          # can this machine make the sandbox?

The code runs with this process's Python (the venv, so PIL and numpy import) in a bubblewrap
sandbox (``isolation`` says exactly how): no network, not even the host's loopback; it sees only
/usr (the system's libraries), the Python installation, its own working folder (the input files
copied in; the code's cwd and HOME) and fresh /tmp, /dev/shm, /proc and /dev; it writes only the
working folder and the in-memory /tmp and /dev/shm (64 MiB each). It is killed at the timeout
together with everything it started, and nothing it started outlives the call. Capped: each
process's address space (``memory_mb``; so all of a sandbox holds at most ``max_processes`` x
``memory_mb`` plus /tmp and /dev/shm), processes + threads at once, each file and the whole
working folder (``max_disk_mb``), and the output.

The result holds stdout and stderr (each cut at ``max_output_bytes``, the cut recorded), the exit
code (128 + N when killed by signal N), whether the timeout hit, and ``files``: every file the code
created or changed in its working folder, by relative path (inputs it left alone are not
returned). ``ok`` is exit 0 within the time; otherwise ``reason`` says why in a word: ``timeout``,
``memory``, ``processes``, ``disk``, ``killed``, ``signal_N`` or ``exit_N`` (``memory``,
``processes`` and ``disk`` are also read from the error Python printed last: MemoryError;
BlockingIOError when a fork or thread hit the process cap; errno 27 or 28 when a file or /tmp
hit its cap).

The same code and files give the same stdout: the environment is fixed (hash seed, UTC, C.UTF-8,
one BLAS thread, hostname ``sandbox``) and nothing of the caller's is passed on.

When bubblewrap is missing or cannot make namespaces (checked once per process, by
``bwrap --version`` and a trial run), ``SandboxUnavailable`` is raised; there is no silent
fallback. ``mode="unsafe_subprocess"`` (the setting ``sandbox.mode=unsafe_subprocess``) runs the
code as a plain subprocess with the same rlimits, timeout and working folder but no isolation at
all, and says so on stderr.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import selectors
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from synthesis.sandbox import isolation
from synthesis.sandbox.isolation import SandboxUnavailable

__all__ = ["SandboxConfig", "SandboxResult", "SandboxUnavailable", "check_sandbox", "run_python"]

log = logging.getLogger(__name__)

SandboxMode = Literal["bwrap", "unsafe_subprocess"]
MAX_WORKDIR_ENTRIES = 10_000  # files + folders the code may leave in its working folder
DISK_POLL_S = 0.2  # how often the working folder's size is measured while the code runs
DRAIN_GRACE_S = 2.0  # after the code ended, how long to wait for its pipes to close


@dataclass(frozen=True)
class SandboxConfig:
    """The sandbox settings a job exposes (``sandbox.timeout_s=5``, ``sandbox.mode=...``);
    the fields are ``run_python``'s keyword arguments: ``run_python(code, **asdict(config))``."""

    mode: SandboxMode = "bwrap"
    timeout_s: float = 10.0
    memory_mb: int = 1024  # address space of each process
    max_processes: int = 64  # processes + threads the code may have at once
    max_output_bytes: int = 1 << 20  # each of stdout and stderr
    max_disk_mb: int = 256  # the working folder: all files together, and any one file


@dataclass(frozen=True)
class SandboxResult:
    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    files: dict[str, bytes] = field(default_factory=dict)
    reason: str = ""  # "" when ok; else timeout, memory, processes, disk, killed, signal_N, exit_N
    stdout_truncated: bool = False  # True when stdout was longer than max_output_bytes (the rest dropped)
    stderr_truncated: bool = False
    mode: SandboxMode = "bwrap"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.reason

    def to_json(self) -> dict:
        """A JSON-ready dict; file contents base64-encoded."""
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "files": {name: base64.b64encode(data).decode("ascii") for name, data in self.files.items()},
            "ok": self.ok,
            "reason": self.reason,
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "mode": self.mode,
            "seconds": round(self.seconds, 4),
        }


def run_python(
    code: str,
    *,
    files: Mapping[str, bytes] | str | os.PathLike | None = None,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 64,
    max_output_bytes: int = 1 << 20,
    max_disk_mb: int = 256,
    mode: SandboxMode = "bwrap",
) -> SandboxResult:
    """Run `code` as a Python script in the sandbox. `files` are the working folder's inputs:
    a mapping of relative path -> bytes (e.g. ``{"image_0.png": ...}``) or a folder to copy."""
    if mode not in ("bwrap", "unsafe_subprocess"):
        raise ValueError(f"sandbox mode must be 'bwrap' or 'unsafe_subprocess', got {mode!r}")
    if timeout_s <= 0 or memory_mb <= 0 or max_processes <= 0 or max_output_bytes < 0 or max_disk_mb <= 0:
        raise ValueError("sandbox limits must be positive")
    if mode == "bwrap":
        check_sandbox()
    else:
        _warn_unsafe_once()
    max_disk_bytes = max_disk_mb << 20
    limits = isolation.Limits(timeout_s=timeout_s, memory_bytes=memory_mb << 20,
                              max_processes=max_processes, max_file_bytes=max_disk_bytes)
    with tempfile.TemporaryDirectory(prefix="keyeforge-sandbox-") as temp:
        temp_path = Path(temp)
        workdir, script_dir, unsafe_tmp = temp_path / "work", temp_path / "code", temp_path / "tmp"
        for folder in (workdir, script_dir, unsafe_tmp):
            folder.mkdir()
        inputs = _write_inputs(workdir, files)
        (script_dir / isolation.SCRIPT_NAME).write_text(code, encoding="utf-8")
        started = time.monotonic()
        if mode == "bwrap":
            isolation.chown_for_sandbox([workdir])
            launched = isolation.start_bwrap(limits, script_dir, workdir)
        else:
            launched = isolation.start_unsafe(limits, script_dir, workdir, unsafe_tmp)
        run = _supervise(launched.process, started + timeout_s, max_output_bytes, workdir, max_disk_bytes)
        seconds = time.monotonic() - started
        # A run we killed has no exit record from bwrap; it had started the code (the setup
        # takes milliseconds, the limits seconds).
        killed = run.timed_out or run.disk_exceeded
        if not launched.finish() and not killed:
            raise SandboxUnavailable(isolation.unavailable_message(run.stderr.decode(errors="replace")))
        outputs, too_much = _collect_outputs(workdir, inputs, max_disk_bytes)
    stdout = run.stdout.decode("utf-8", errors="replace")
    stderr = run.stderr.decode("utf-8", errors="replace")
    exit_code = run.exit_code
    reason = _reason(exit_code, run.timed_out, run.disk_exceeded or too_much, stderr)
    return SandboxResult(stdout=stdout, stderr=stderr, exit_code=exit_code, timed_out=run.timed_out,
                         files=outputs, reason=reason, stdout_truncated=run.stdout_truncated,
                         stderr_truncated=run.stderr_truncated, mode=mode, seconds=seconds)


_check_lock = threading.Lock()
_check_outcome: str | SandboxUnavailable | None = None


def check_sandbox() -> str:
    """Whether bubblewrap can make the sandbox here: returns bwrap's version, or raises
    ``SandboxUnavailable`` with the reason. Checked once per process (a trial run), then cached."""
    global _check_outcome
    with _check_lock:
        if _check_outcome is None:
            _check_outcome = _trial_run()
    if isinstance(_check_outcome, SandboxUnavailable):
        raise _check_outcome
    return _check_outcome


def _trial_run() -> str | SandboxUnavailable:
    try:
        version = isolation.bwrap_version()
        limits = isolation.Limits(timeout_s=30, memory_bytes=1 << 30, max_processes=64, max_file_bytes=1 << 20)
        with tempfile.TemporaryDirectory(prefix="keyeforge-sandbox-check-") as temp:
            workdir, script_dir = Path(temp) / "work", Path(temp) / "code"
            workdir.mkdir()
            script_dir.mkdir()
            (script_dir / isolation.SCRIPT_NAME).write_text("import os\nprint(os.getuid())\n")
            isolation.chown_for_sandbox([workdir])
            launched = isolation.start_bwrap(limits, script_dir, workdir)
            run = _supervise(launched.process, time.monotonic() + 30, 1 << 16, workdir, 1 << 20)
            finished = launched.finish()
        detail = run.stderr.decode(errors="replace")
        if not finished:
            return SandboxUnavailable(isolation.unavailable_message(detail))
        if run.exit_code != 0 or run.stdout.strip() != str(isolation.SANDBOX_UID).encode():
            return SandboxUnavailable(isolation.unavailable_message(
                f"the trial run exited {run.exit_code} printing {run.stdout[:200]!r}: {detail[-2000:]}"))
        return version
    except SandboxUnavailable as error:
        return error
    except OSError as error:
        return SandboxUnavailable(isolation.unavailable_message(f"{type(error).__name__}: {error}"))


_unsafe_warned = False


def _warn_unsafe_once() -> None:
    global _unsafe_warned
    if not _unsafe_warned:
        _unsafe_warned = True
        log.warning("sandbox.mode=unsafe_subprocess: model-written code runs WITHOUT isolation (no namespaces: "
                    "it can read and write your files, reach the network and leave processes behind); only "
                    "rlimits, the timeout and a temporary working folder apply")


def _write_inputs(workdir: Path, files: Mapping[str, bytes] | str | os.PathLike | None) -> dict[str, bytes]:
    if files is None:
        return {}
    if isinstance(files, (str, os.PathLike)):
        files = _read_folder(Path(files))
    inputs: dict[str, bytes] = {}
    for name, data in files.items():
        relative = PurePosixPath(name)
        if not name or relative.is_absolute() or ".." in relative.parts or relative == PurePosixPath("."):
            raise ValueError(f"sandbox input file names must be relative paths inside the working folder: {name!r}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"sandbox input {name!r}: expected bytes, got {type(data).__name__}")
        target = workdir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bytes(data))
        inputs[relative.as_posix()] = bytes(data)
    return inputs


def _read_folder(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        raise ValueError(f"sandbox input folder {folder} is not a folder")
    contents = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ValueError(f"sandbox input folder {folder} holds a symlink ({path}); copy real files in")
        if path.is_file():
            contents[path.relative_to(folder).as_posix()] = path.read_bytes()
    return contents


@dataclass
class _Run:
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    exit_code: int
    timed_out: bool
    disk_exceeded: bool


def _supervise(process: subprocess.Popen, deadline: float, max_output_bytes: int, workdir: Path,
               max_disk_bytes: int) -> _Run:
    """Collect the output (first `max_output_bytes` of each stream, the rest read and dropped so
    the code never blocks on a full pipe) until the process ends; kill its whole process group
    at the deadline or when the working folder outgrows `max_disk_bytes`."""
    captured = {process.stdout: bytearray(), process.stderr: bytearray()}
    truncated = {process.stdout: False, process.stderr: False}
    selector = selectors.DefaultSelector()
    for stream in captured:
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ)
    timed_out = disk_exceeded = False
    next_disk_check = time.monotonic() + DISK_POLL_S
    drain_until = None  # once the main process has ended: how long its pipes may stay open
    try:
        # For bwrap the pipes close when the sandbox is gone (its PID 1 ends with the main
        # process); a plain subprocess may leave a detached descendant holding them, so they
        # get DRAIN_GRACE_S after the main process ended.
        while selector.get_map():
            now = time.monotonic()
            if drain_until is None and process.poll() is not None:
                drain_until = now + DRAIN_GRACE_S
            if drain_until is not None and now >= drain_until:
                break
            if drain_until is None and now >= deadline:
                timed_out = True
                break
            if now >= next_disk_check:
                next_disk_check = now + DISK_POLL_S
                if _folder_exceeds(workdir, max_disk_bytes):
                    disk_exceeded = True
                    break
            wait = min(deadline if drain_until is None else drain_until, next_disk_check) - now
            for key, _ in selector.select(timeout=max(wait, 0)):
                _read_some(key.fileobj, captured, truncated, max_output_bytes, selector)
        if timed_out or disk_exceeded:
            _kill_group(process)
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0) + 1)
        except subprocess.TimeoutExpired:
            # The main process closed its pipes but kept running: that is the timeout too.
            timed_out = True
            _kill_group(process)
            process.wait()
        # What the code printed before it was killed may still sit in the pipes.
        drain_until = time.monotonic() + DRAIN_GRACE_S
        while selector.get_map() and time.monotonic() < drain_until:
            for key, _ in selector.select(timeout=max(drain_until - time.monotonic(), 0)):
                _read_some(key.fileobj, captured, truncated, max_output_bytes, selector)
    finally:
        if process.poll() is None:
            _kill_group(process)
            process.wait()
        selector.close()
        process.stdout.close()
        process.stderr.close()
    exit_code = process.returncode
    if exit_code < 0:  # a plain subprocess killed by a signal; bwrap reports 128 + N itself
        exit_code = 128 - exit_code
    return _Run(bytes(captured[process.stdout]), bytes(captured[process.stderr]), truncated[process.stdout],
                truncated[process.stderr], exit_code, timed_out, disk_exceeded)


def _read_some(stream, captured: dict, truncated: dict, max_output_bytes: int,
               selector: selectors.BaseSelector) -> None:
    try:
        chunk = os.read(stream.fileno(), 1 << 16)
    except BlockingIOError:
        return
    if not chunk:
        selector.unregister(stream)
        return
    room = max_output_bytes - len(captured[stream])
    if len(chunk) > room:
        truncated[stream] = True
    if room > 0:
        captured[stream] += chunk[:room]


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group we started (bwrap, or the plain subprocess). For bwrap that is
    enough for the whole sandbox: its PID 1 dies with it (``--die-with-parent``), and with PID 1
    the kernel kills every process of the namespace."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _folder_exceeds(folder: Path, max_bytes: int) -> bool:
    """Whether the files under `folder` hold more than `max_bytes` (apparent sizes) or there are
    more than MAX_WORKDIR_ENTRIES of them."""
    total = entries = 0
    pending = [str(folder)]
    while pending:
        try:
            scan = os.scandir(pending.pop())
        except OSError:
            continue
        with scan:
            for entry in scan:
                entries += 1
                if entries > MAX_WORKDIR_ENTRIES:
                    return True
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    pending.append(entry.path)
                else:
                    total += info.st_size
                    if total > max_bytes:
                        return True
    return False


def _collect_outputs(workdir: Path, inputs: dict[str, bytes], max_bytes: int) -> tuple[dict[str, bytes], bool]:
    """Regular files the code created or changed, by relative path, in sorted order. Symlinks
    and other special files it made are not followed (they could point anywhere on the host).
    Returns the files and whether the working folder held more than `max_bytes`."""
    outputs: dict[str, bytes] = {}
    total = 0
    if _folder_exceeds(workdir, max_bytes):
        return outputs, True
    for folder, dirnames, filenames in os.walk(workdir, followlinks=False):
        dirnames.sort()
        for filename in sorted(filenames):
            path = os.path.join(folder, filename)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # a symlink, or unreadable
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                data = handle.read(max_bytes - total + 1)
            total += len(data)
            if total > max_bytes:
                return {}, True
            name = Path(path).relative_to(workdir).as_posix()
            if inputs.get(name) != data:
                outputs[name] = data
    return dict(sorted(outputs.items())), False


_MEMORY_ERROR = re.compile(r"^([\w.]+\.)?_?\w*MemoryError\b")
_PROCESS_CAP_ERROR = re.compile(r"^BlockingIOError: \[Errno 11\]|can't start new thread")
_DISK_CAP_ERROR = re.compile(r"\[Errno (27|28)\]")  # EFBIG: a file over the cap; ENOSPC: /tmp full


def _reason(exit_code: int, timed_out: bool, disk_exceeded: bool, stderr: str) -> str:
    if timed_out:
        return "timeout"
    if disk_exceeded or exit_code == 128 + signal.SIGXFSZ:
        return "disk"
    if exit_code == 0:
        return ""
    last_line = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    if _MEMORY_ERROR.match(last_line):
        return "memory"
    if _PROCESS_CAP_ERROR.search(last_line):
        return "processes"
    if _DISK_CAP_ERROR.search(last_line):
        return "disk"
    if exit_code == 128 + signal.SIGXCPU:
        return "timeout"
    if exit_code == 128 + signal.SIGKILL:
        return "killed"
    if exit_code > 128:
        return f"signal_{exit_code - 128}"
    return f"exit_{exit_code}"
