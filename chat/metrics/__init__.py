"""What the node counts, and how ``GET /metrics`` exports it (Prometheus text format).

* :mod:`chat.metrics.counters` — pure: plain integer counters and a fixed-bucket histogram that
  the hot path bumps (no lock, no label lookup, no prometheus import);
* :mod:`chat.metrics.looplag` — a timer that measures its own lateness (event-loop lag);
* :mod:`chat.metrics.collector` — one prometheus-client ``Collector`` that reads every counter
  and gauge at scrape time;
* :mod:`chat.metrics.endpoint` — the ``/metrics`` route and who may read it.

This package's ``__init__`` imports nothing, so the core can import the counters without
loading prometheus-client.
"""
