"""The services host process: serves one local replica's 14 SockShop services until SIGTERM.

``python -m envs.backends.local.apps --replica K --seed S`` runs a :class:`ShopHost`
(``shop.py``) on replica K's ports; the supervisor (``supervisor.py``) starts it."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from envs.backends.local.shop import ShopHost


async def _main(replica: int, seed: int) -> None:
    host = ShopHost(replica, seed)
    await host.start()
    print(f"services of replica {replica} listening", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await host.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point: serve replica ``--replica``'s services until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.replica, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
