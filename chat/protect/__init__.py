"""Hot-room protection with its I/O (issue 9): the pure decisions of :mod:`chat.hot` wired to
the store, the relay, the hub, timers and dynamic configuration. One :class:`~chat.protect.guard.Protection`
per node, built by the composition root; the core reaches it only through :mod:`chat.guards`.

* :mod:`chat.protect.guard` — :class:`Protection`: builds the parts, applies dynamic settings on
  every change, runs the periodic tick, implements the core's ports, the ops view (snapshot, pins)
* :mod:`chat.protect.rooms` — the hot-room detector (rooms only are protected), the reports nodes
  exchange on the relay topic ``h:rates``, pins
* :mod:`chat.protect.breakers` — the store and the relay behind a circuit breaker each
* :mod:`chat.protect.writes` — storage lanes (bot / hot / interactive) and the hot rooms' batch writer
* :mod:`chat.protect.fanout` — coalesced fan-out and suppressed typing/presence (the hub's policy)
* :mod:`chat.protect.history` — hot rooms' recent-history windows and coalesced identical reads
* :mod:`chat.protect.joins` — the join gate: waiting room (port :mod:`chat.waiting`) or join limit
* :mod:`chat.protect.counters` — the plain counters every part bumps, for metrics
* :mod:`chat.protect.listen` — a hub subscriber that is not a socket (reports, history windows)
"""
