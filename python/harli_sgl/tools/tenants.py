"""``python -m harli_sgl.tools.tenants``: manage API keys, tenants' quotas and adapter shares.

The command-line twin of the admin routes (:mod:`harli_sgl.sglang.admin_routes`),
working on the same store, so keys can be made before a server starts or on a
server without ``--admin-api-key``. It takes the server's store flags
(``--harli-workdir``, ``--harli-db``, ``--harli-shared-dir``) and prints JSON.
A new key is printed once, in the ``key`` field; nothing can show it again.

Examples::

    python -m harli_sgl.tools.tenants --harli-workdir .harli keys create acme --name ci
    python -m harli_sgl.tools.tenants --harli-db postgresql://... keys list --tenant acme
    python -m harli_sgl.tools.tenants keys revoke key-0123456789abcdef01234567
    python -m harli_sgl.tools.tenants tenants limits acme --max-queued-jobs 5 --max-running-jobs none
    python -m harli_sgl.tools.tenants shares add 'ft:base:acme::3f2a9c0b1d4e' beta
"""

from __future__ import annotations

import argparse
import json
import sys

from harli_sgl import config as harli_config
from harli_sgl.jobs import audit
from harli_sgl.jobs.stores import open_store
from harli_sgl.jobs.tenants import LIMIT_NAMES, Limits

BY = "cli"


def _limit(text: str) -> int | None:
    return None if text.lower() in ("none", "null", "default") else int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harli_sgl.tools.tenants", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_subparsers(dest="what", required=True)
    keys = what.add_parser("keys").add_subparsers(dest="verb", required=True)
    create = keys.add_parser("create", help="a new key for TENANT (printed once)")
    create.add_argument("tenant")
    create.add_argument("--name")
    keys.add_parser("list").add_argument("--tenant")
    keys.add_parser("revoke").add_argument("key_id")
    tenants = what.add_parser("tenants").add_subparsers(dest="verb", required=True)
    tenants.add_parser("list")
    limits = tenants.add_parser("limits", help="set TENANT's quotas ('none': server default)")
    limits.add_argument("tenant")
    for name in LIMIT_NAMES:
        # SUPPRESS: a limit not given keeps its value; 'none' resets it to the default.
        limits.add_argument("--" + name.replace("_", "-"), dest=name, type=_limit,
                            default=argparse.SUPPRESS)
    shares = what.add_parser("shares").add_subparsers(dest="verb", required=True)
    for verb in ("add", "remove"):
        s = shares.add_parser(verb)
        s.add_argument("adapter")
        s.add_argument("tenant", help="a tenant, or '*' for every tenant")
    shares.add_parser("list").add_argument("--adapter")
    return p


def run(store, args: argparse.Namespace) -> object:
    if args.what == "keys":
        if args.verb == "create":
            made = store.create_key(args.tenant, args.name)
            audit.record("key.create", args.tenant, made.key["id"], by=BY)
            return {**made.key, "key": made.secret}
        if args.verb == "list":
            return store.list_keys(args.tenant)
        key = store.revoke_key(args.key_id)
        if key is None:
            raise SystemExit(f"no such API key: {args.key_id!r}")
        audit.record("key.revoke", key["tenant"], key["id"], by=BY)
        return key
    if args.what == "tenants":
        if args.verb == "list":
            return store.list_tenants()
        current = store.get_tenant(args.tenant)
        own = dict(current["limits"]) if current else {}
        given = {n: getattr(args, n) for n in LIMIT_NAMES if hasattr(args, n)}
        updated = store.set_limits(args.tenant, Limits(**{**own, **given}))
        audit.record("tenant.limits", args.tenant, args.tenant, by=BY, **updated["limits"])
        return updated
    if args.verb == "list":
        return store.list_shares(args.adapter)
    if args.verb == "add":
        shared = store.share_adapter(args.adapter, args.tenant)
        audit.record("adapter.share", args.tenant, args.adapter, by=BY)
        return shared
    if not store.unshare_adapter(args.adapter, args.tenant):
        raise SystemExit(f"{args.adapter!r} is not shared with {args.tenant!r}")
    audit.record("adapter.unshare", args.tenant, args.adapter, by=BY)
    return {"adapter": args.adapter, "tenant": args.tenant, "deleted": True}


def main(argv: list[str] | None = None) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config, rest = harli_config.split_argv(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(rest)
    store = open_store(config)
    try:
        result = run(store, args)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    finally:
        store.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
