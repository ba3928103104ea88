"""Caps on how much evidence one session or one client can contribute to what everyone is recommended.

Every event is stored (it is the person's record, and erasable); only *counted* ones reach the learned state:
  - per (session, item): one counted vote, whatever the number of recommendations that showed the item;
  - per session: SESSION_COUNTED_VOTES votes and the impressions of its first SESSION_COUNTED_RECOMMENDATIONS
    recommendations (checked in the database, so every replica agrees);
  - per client (address, or /64 for IPv6): CLIENT_COUNTED_PER_HOUR counted votes and counted recommendations
    an hour, in each gateway process's memory (N replicas allow up to N times that; the per-session caps and
    the rate limit still hold). A client at the rate limit (20 requests/s) could otherwise cast ~72,000 votes
    an hour; with the caps it moves the learned state by at most 60 votes an hour.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

SESSION_COUNTED_VOTES = 10
SESSION_COUNTED_RECOMMENDATIONS = 20
CLIENT_COUNTED_PER_HOUR = 60
MAX_CLIENTS = 10_000  # budgets kept in memory; the least recently seen client is forgotten first


class ClientBudget:
    """A fixed-window count per client: `allow` says whether one more counted contribution fits this hour."""

    def __init__(self, per_window: int = CLIENT_COUNTED_PER_HOUR, window_s: float = 3600.0) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()  # called from the thread pool

    def allow(self, client: str) -> bool:
        """Spend one unit of the client's budget if any is left."""
        now = time.monotonic()
        with self._lock:
            start, used = self._counts.pop(client, (now, 0))
            if now - start >= self.window_s:
                start, used = now, 0
            allowed = used < self.per_window
            self._counts[client] = (start, used + int(allowed))
            if len(self._counts) > MAX_CLIENTS:
                self._counts.popitem(last=False)
            return allowed
