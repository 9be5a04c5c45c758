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
