"""Periodic jobs, run by rq-scheduler: the daily cleanup and the monthly quota report.

``scheduler.jobs`` holds the job functions (workers run them from the ``batch`` queue);
``scheduler.registration`` registers them with stable ids and runs the scheduler, in UTC.
"""
