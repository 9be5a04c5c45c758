"""Progress of a long step: rows done of the total, rate and ETA, on a terminal and in the log.

A step runs as Spark jobs tagged with the step's name (a job group); a thread reads Spark's status
tracker every second and estimates rows done from the tasks finished in the step's running stage
(tasks are splits of the rows, so tasks done / tasks is rows done / rows). On a terminal the line
is rewritten in place; into a log (stderr not a terminal) a line is written every
`LOG_EVERY_SECONDS`, so a job's log shows where it was.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

from pyspark.sql import SparkSession

LOG_EVERY_SECONDS = 30.0
TERMINAL_EVERY_SECONDS = 1.0


@contextlib.contextmanager
def track(spark: SparkSession, step: str, rows: int | None, log: Callable[[str], None]) -> Iterator[None]:
    """Report the progress of the Spark jobs run inside the block, as `step` over `rows` rows."""
    sc = spark.sparkContext
    sc.setJobGroup(step, f"keyeforge step {step}", interruptOnCancel=False)
    stop = threading.Event()
    terminal = sys.stderr.isatty()
    thread = threading.Thread(target=_watch, args=(sc, step, rows, log, stop, terminal), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        if terminal:
            sys.stderr.write("\r\033[K")
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)


def _watch(sc, step: str, rows: int | None, log, stop: threading.Event, terminal: bool) -> None:
    started = time.monotonic()
    last_log = started
    first_seen: dict[int, float] = {}  # stage id -> when it was first seen running
    every = TERMINAL_EVERY_SECONDS if terminal else LOG_EVERY_SECONDS
    while not stop.wait(every if terminal else 1.0):
        now = time.monotonic()
        if not terminal and now - last_log < LOG_EVERY_SECONDS:
            continue
        line = describe(sc, step, rows, now - started, first_seen)
        if line is None:
            continue
        if terminal:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        else:
            log(line)
            last_log = now


def describe(sc, step: str, rows: int | None, elapsed: float, first_seen: dict[int, float]) -> str | None:
    """One progress line for the step's largest running stage, or None when none runs."""
    tracker = sc.statusTracker()
    stages = []
    for job_id in tracker.getJobIdsForGroup(step):
        job = tracker.getJobInfo(job_id)
        if job is None or job.status != "RUNNING":
            continue
        for stage_id in job.stageIds:
            info = tracker.getStageInfo(stage_id)
            if info is not None and info.numActiveTasks > 0:
                stages.append(info)
    if not stages:
        return None
    stage = max(stages, key=lambda s: s.numTasks)
    done, total = stage.numCompletedTasks, max(1, stage.numTasks)
    fraction = done / total
    stage_seconds = max(1e-3, time.monotonic() - first_seen.setdefault(stage.stageId, time.monotonic()))
    parts = [f"{step}: stage {stage.stageId} {done}/{total} tasks"]
    if rows:
        parts.append(f"~{int(rows * fraction):,} of {rows:,} rows")
        if fraction > 0:
            parts.append(f"{rows * fraction / stage_seconds:,.0f} rows/s")
    if 0 < fraction < 1:
        parts.append(f"ETA {stage_seconds * (1 - fraction) / fraction:,.0f}s")
    parts.append(f"{elapsed:,.0f}s")
    return " · ".join(parts)
