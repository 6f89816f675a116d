"""The timer trigger without the Functions host: call the same Orchestrator.tick every few seconds.

`python -m local_stack.timer_loop [--interval 5]` (started by `local_stack up`). A failing tick is
logged and the loop goes on, as the host would fire the timer again.
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime

from function_app import services

log = logging.getLogger("timer_loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between ticks")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # not every HTTP request to storage
    orchestrator = services.get().orchestrator
    while True:
        try:
            run = orchestrator.tick(datetime.now(UTC))
            if run is not None:
                log.info("run %s: %s", run.id, run.state)
        except Exception:  # noqa: BLE001 - keep ticking; the next tick retries
            log.exception("tick failed")
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
