"""A running step shows its progress: stage, tasks done, rows done of the total, rate and ETA."""

from __future__ import annotations

import re
import threading
import time

from curation.progress import describe, track


def _slow(batches):
    for batch in batches:
        time.sleep(0.4)
        yield batch


def test_a_running_step_reports_tasks_rows_rate_and_eta(spark):
    lines: list[str] = []
    seen: list[str] = []
    done = threading.Event()

    def poll():
        first: dict[int, float] = {}
        while not done.is_set():
            line = describe(spark.sparkContext, "slow_step", 8000, 1.0, first)
            if line:
                seen.append(line)
            time.sleep(0.1)

    watcher = threading.Thread(target=poll)
    watcher.start()
    try:
        with track(spark, "slow_step", 8000, lines.append):
            spark.range(8000, numPartitions=8).mapInArrow(_slow, "id long").count()
    finally:
        done.set()
        watcher.join()
    assert seen, "no progress line while the step ran"
    assert any(re.search(r"slow_step: stage \d+ [1-7]/8 tasks · ~[\d,]+ of 8,000 rows · [\d,]+ rows/s · ETA \d+s", s) for s in seen), seen
    # outside the step's jobs there is nothing to report
    assert describe(spark.sparkContext, "slow_step", 8000, 1.0, {}) is None
