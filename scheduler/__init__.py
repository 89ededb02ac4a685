"""Periodic jobs (rq-scheduler): daily cleanup and the monthly quota reset.

Nothing is scheduled yet: transcripts and job records expire by their Redis TTLs
(``TRANSCRIPT_TTL``, ``RESULT_TTL``) and each job removes its own temporary files.
"""
