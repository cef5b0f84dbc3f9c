"""Where children's output goes (DESIGN §12): the few hooks stages and supervisor call.

- Nothing set: every child inherits the container's stdout and stderr (zero copies).
- `S6_LOGGING` 1/2: the catch-all (catchall.py) takes overlayd's fds 1 and 2 before the first
  script runs, so everything inherits it; the CMD gets the console back with 1.
- `OVERLAY_LOG_PREFIX=1`: each service without a logger writes into pipes of the line
  prefixer (linemux.py), and one with a logger has its stderr there; the prefixer writes to
  overlayd's fds 1 and 2 (the catch-all, when both are on).

At shutdown, after cont-finish.d: the prefixer writes out what it holds, then the catch-all
is stopped last (`stop`).
"""

from __future__ import annotations

from . import log
from .loop import TIMED_OUT

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from .catchall import CatchAll
    from .linemux import LineMux
    from .logsettings import LogSettings
    from .loop import Loop
    from .reaper import Reaper

CATCHALL_EXIT_WAIT = 1.0  # s for the catch-all to write out and exit once its pipe is closed


class Outputs:
    """The catch-all and the prefixer of one container, each present only when asked for."""

    def __init__(self, loop: Loop, reaper: Reaper, settings: LogSettings) -> None:
        self.loop = loop
        self.reaper = reaper
        self.settings = settings
        self.catchall: CatchAll | None = None
        self.linemux: LineMux | None = None

    def start(self) -> None:
        """Stage 1: the catch-all first (it takes fds 1 and 2), then the prefixer over them."""
        if self.settings.mode:
            from .catchall import CatchAll

            catchall = CatchAll(self.loop, self.reaper, self.settings)
            if catchall.start():
                self.catchall = catchall
        if self.settings.prefix:
            from .linemux import LineMux

            self.linemux = LineMux(self.loop, timestamps=self.settings.timestamps)

    def service_fds(self, name: str, has_logger: bool) -> tuple[int | None, int | None]:
        """(stdout, stderr) for service `name`'s run and finish; None means inherited."""
        if self.linemux is None:
            return None, None
        out, err = self.linemux.attach(name)
        return (None if has_logger else out), err

    def cmd_fds(self) -> tuple[int | None, int | None]:
        """(stdout, stderr) for the CMD: the console under S6_LOGGING=1, else inherited."""
        if self.catchall is None:
            return None, None
        return self.catchall.cmd_fds()

    async def stop(self) -> None:
        """After cont-finish.d: write out the prefixer, then stop the catch-all, last."""
        if self.linemux is not None:
            from .linemux import DRAIN_SECONDS

            drained = await self.loop.with_timeout(self.linemux.close(), DRAIN_SECONDS)
            if drained is TIMED_OUT:
                log.warn(f"the container's output took no data for {DRAIN_SECONDS:g} s")
        if self.catchall is not None:
            await self.loop.with_timeout(self.catchall.stop(), CATCHALL_EXIT_WAIT)
