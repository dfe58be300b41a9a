"""One log line per cause and interval, however many requests hit the same failure.

An outage of Redis or the directory fails every request at once: a line per request buries the
one fact IT needs (what broke, since when) under thousands of copies. ``RateLimitedLog`` writes
the first line for a message at once, then at most one per ``interval`` seconds, saying how many
were held back in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        # message format -> (time of the last line written, lines held back since)
        self._seen: dict[str, tuple[float, int]] = {}

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless the same ``msg`` was logged less than ``interval`` ago;
        returns whether a line was written."""
        now = self._clock()
        last, held = self._seen.get(msg, (-1e18, 0))
        if now - last < self.interval:
            self._seen[msg] = (last, held + 1)
            return False
        if len(self._seen) > 1000:
            # Formats are a fixed set in the code; this only guards against a caller's mistake.
            self._seen.clear()
        self._seen[msg] = (now, 0)
        if held:
            self.logger.log(level, msg + " (%d similar lines in the last %.0f s not shown)", *args, held,
                            now - last)
        else:
            self.logger.log(level, msg, *args)
        return True

    def error(self, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, msg, *args)

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)
