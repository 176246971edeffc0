"""``python -m harli_sgl.demo.fleet``: the demo of ``scripts/fleet.sh``.

Starts a fleet on this machine (PostgreSQL, two harli_sgl instances on the
embedded default model, sglang-router in front; see :mod:`harli_sgl.tools.fleet`),
submits the demo finetune job to the first instance, follows it wherever the
fleet runs it, then sends requests for the finished adapter through the router
and shows which instance answered each. Everything keeps running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import tempfile

import openai

from harli_sgl.demo.__main__ import DATA, run_demo_job, say
from harli_sgl.tools.fleet import Fleet


def _answered(server) -> int:
    with open(server.log_path, errors="replace") as f:
        return len(re.findall(r'"POST /v1/chat/completions HTTP/1.1" 200', f.read()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="Where the fleet keeps its state and logs "
                        "(default: a new temporary directory).")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--no-wait", action="store_true", help="Stop the fleet after the demo.")
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="harli-fleet-")
    fleet = Fleet(root, instances=args.instances)
    signal.signal(signal.SIGTERM, lambda *_: (fleet.stop(), sys.exit(0)))
    try:
        say(f"starting PostgreSQL, {args.instances} instances and sglang-router under {root} "
            "(logs there; a few minutes on 2 cores)")
        fleet.start()
        say(f"router: {fleet.router.base_url}   instances: "
            + ", ".join(s.base_url for s in fleet.servers) + f"   store: {re.sub(r':[^:@/]+@', ':***@', fleet.db_url)}")
        first = fleet.servers[0]
        model = openai.OpenAI(base_url=first.base_url + "/v1", api_key="none").models.list().data[0].id
        adapter = run_demo_job(first.base_url, "none", model)
        router = openai.OpenAI(base_url=fleet.router.base_url + "/v1", api_key="none")
        before = [_answered(s) for s in fleet.servers]
        with open(DATA) as f:  # questions the adapter was trained on
            questions = [json.loads(line)["messages"][0]["content"] for line in f]
        for i in range(args.requests):
            counts = [_answered(s) for s in fleet.servers]
            r = router.chat.completions.create(
                model=f"{model}:{adapter}", max_tokens=16, temperature=0,
                messages=[{"role": "user", "content": questions[i % len(questions)]}])
            who = [j for j, s in enumerate(fleet.servers) if _answered(s) > counts[j]]
            say(f"  request {i + 1} via the router -> {fleet.instance_id(who[0]) if who else '?'}: "
                f"{questions[i % len(questions)]!r} -> {r.choices[0].message.content!r}")
        served = [_answered(s) - n for s, n in zip(fleet.servers, before)]
        say("answered per instance: " + ", ".join(
            f"{fleet.instance_id(i)}={n}" for i, n in enumerate(served)))
        say(f"fine-tuning API: any instance, e.g. {first.base_url}/v1/fine_tuning/jobs; "
            f"inference: the router, {fleet.router.base_url}/v1/chat/completions")
        if not args.no_wait:
            say("the fleet keeps serving; Ctrl-C stops it")
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()


if __name__ == "__main__":
    main()
