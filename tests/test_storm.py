"""The kill storm (``bench/storm.py``): no accepted job is lost, and each ends exactly once.

60 jobs submitted in bursts over ~20 s to 2 workers while, every few seconds, a random worker
process (main, work horse or engine host), or all three, is killed with SIGKILL (a killed worker
is started again), one worker is frozen with SIGSTOP for 30 s, and Redis is killed with SIGKILL and started
again from its append-only file. ``make storm`` runs the same with 300 jobs and prints the figures.
"""

import json

from bench import storm


def test_every_accepted_job_completes_exactly_once_through_a_kill_storm():
    result = storm.run(60, seed=None)
    summary = result.summary()
    print("kill storm:", json.dumps(summary))
    assert len(result.accepted) == 60
    assert result.lost == [], {job_id: result.final[job_id] for job_id in result.lost}
    assert summary["completions_counted"] == summary["transcripts"] == 60  # once each
    assert summary["ledger_left"] == 0
    blows = summary["blows"]
    assert blows["freeze"] == 1 and blows["redis"] == 1
    assert sum(blows.get(kind, 0) for kind in ("kill-main", "kill-horse", "kill-engine-host", "kill-machine")) >= 5
