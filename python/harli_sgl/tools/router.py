"""Start the real sglang-router (its Rust ``Router``) without importing SGLang itself.

``python -m sglang_router.launch_router`` imports the Python mini load balancer
at module level, and that imports SGLang: 8 s of imports on an idle 2-core host
and about 40 s while a fleet's instances start beside it, all on the fleet's
critical path (the router starts once the instances answer). The router itself
is Rust and needs none of it. This launcher takes the same flags, parsed by the
router's own ``RouterArgs``, validates them as the stock launcher does, and
starts ``sglang_router.router.Router``: the same router, minus the mini load
balancer (``--mini-lb``, a debugging mode, is refused here).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    from sglang_router.router import Router
    from sglang_router.router_args import RouterArgs

    parser = argparse.ArgumentParser(description="The sglang-router, started without SGLang.")
    RouterArgs.add_cli_args(parser, use_router_prefix=False)
    args = RouterArgs.from_cli_args(parser.parse_args(argv), use_router_prefix=False)
    if args.mini_lb:
        parser.error("--mini-lb needs SGLang: use python -m sglang_router.launch_router")
    args._validate_router_args()  # what the stock launcher checks before starting
    Router.from_args(args).start()  # blocks, serving, until the process is stopped


if __name__ == "__main__":
    main(sys.argv[1:])
