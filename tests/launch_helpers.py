"""The environment of a fresh shell for a test that starts `python -m training.launch` itself.

An in-process training test makes the pytest process a world of one (training.engine fills in
RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and keeps that port's store open); a child that
inherited those would try to listen on the same port and fail with EADDRINUSE."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def fresh_shell_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED}
    env["TORCH_EXTENSIONS_DIR"] = str(REPO / ".torch_extensions")
    return {**env, **extra}


def launch(*args: str, wait: bool = True, **popen):
    """`python -m training.launch ARGS` as a user runs it (the environment of a fresh shell): the
    finished process (asserted to have succeeded), or with wait=False the running one, in a
    session of its own so that `kill_at_checkpoint` can kill it with everything it started."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "training.launch", *args]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=fresh_shell_env(), start_new_session=True, **popen)
    proc = subprocess.run(command, cwd=REPO, env=fresh_shell_env(), capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def kill_at_checkpoint(*args: str, output: Path, step: int) -> None:
    """Start the run, SIGKILL its whole process group as soon as checkpoint `step` is complete,
    and check that it was killed mid-run (no export written)."""
    import signal
    import subprocess
    import time

    proc = launch(*args, f"output={output}", wait=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = output / "checkpoints" / f"step_{step}" / "COMPLETE"
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL  # killed mid-run, not finished
    assert not (output / "export").exists()
