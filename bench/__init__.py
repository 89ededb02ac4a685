"""The benchmark of ytcaption: engine speed, end-to-end overhead, API load, queue throughput,
worker memory. Run ``python -m bench`` (or ``make bench``); ``--quick`` is what CI runs.
"""
