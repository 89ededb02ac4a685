"""Job functions that only the tests enqueue (workers import them by path, like any job)."""

import signal
import time


def stuck_in_native_code(seconds: float) -> None:
    """Behave like a job stuck inside a C extension: Python signal handlers cannot run.

    With SIGALRM (RQ's timeout) and SIGUSR1 (a cancel) blocked, neither can interrupt the job:
    only its worker process being killed stops it.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1})
    time.sleep(seconds)
