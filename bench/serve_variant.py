"""Run the chat app under a variant of the production uvicorn configuration (benchmarks only).

    CHAT_PORT=… CHAT_DATA_DIR=… CHAT_JWT_SECRET=… .venv/bin/python -m bench.serve_variant --deflate on

Same app (``chat.app.create_app``), same ``chat.server.uvicorn_config`` and ``ChatServer``;
only the options named here are changed afterwards, so a comparison isolates one setting:

* ``--deflate on``: ``ws_per_message_deflate=True`` (production runs with it off);
* ``--loop uvloop``: uvicorn's uvloop event loop (needs ``uvloop`` importable, e.g. from a
  directory on ``PYTHONPATH``; the project does not depend on it);
* ``--patch NAME`` (repeatable): a prototype of a proposed server change from
  ``bench.experiments`` (``rawsend``, ``fastpath``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from bench.experiments import PATCHES
from chat import logfilters
from chat.app import create_app
from chat.config import from_env
from chat.server import ChatServer, uvicorn_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deflate", choices=["on", "off"], default="off")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "auto"], default="auto", help="auto (production): uvloop if importable")
    parser.add_argument("--patch", action="append", default=[], choices=sorted(PATCHES))
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    settings = from_env()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn_config(app, settings, log_level=args.log_level)
    config.ws_per_message_deflate = args.deflate == "on"
    config.loop = args.loop
    for name in args.patch:
        PATCHES[name](config)
    logfilters.install()
    logging.getLogger(__name__).info("variant: deflate=%s loop=%s patches=%s", args.deflate, args.loop, args.patch)
    server = ChatServer(config, app.state.parts.node)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
