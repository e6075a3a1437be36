"""Slowing down token guessing: wrong tokens counted per client address."""

from __future__ import annotations

from collections import OrderedDict, deque


class AuthFailures:
    """Wrong-token times per address. An address with ``limit`` failures within ``window`` seconds is locked
    until ``window`` seconds after its last failure. At most ``max_addresses`` are remembered (the oldest
    forgotten first), so a flood from many addresses cannot grow it without bound."""

    def __init__(self, limit: int, window: float, max_addresses: int = 4096) -> None:
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def fail(self, address: str, now: float) -> None:
        times = self._times.pop(address, None) or deque(maxlen=self.limit)
        times.append(now)
        self._times[address] = times  # most recent last
        while len(self._times) > self.max_addresses:
            self._times.popitem(last=False)

    def locked_for(self, address: str, now: float) -> float:
        """Seconds this address must still wait (0: not locked)."""
        times = self._times.get(address)
        if not times or len(times) < self.limit or times[-1] - times[0] > self.window:
            return 0.0
        return max(0.0, times[-1] + self.window - now)
