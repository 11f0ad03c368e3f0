"""The ``acesteps`` command.

acesteps schemas export [--dir DIR]   write the topic JSON Schemas
acesteps schemas check [--dir DIR]    exit 1 when the written schemas are stale
acesteps topics create                create the topics on the configured Kafka
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from acesteps import schemas


def _schemas(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if args.action == "export":
        for path in schemas.export(directory):
            print(path)
        return 0
    stale = schemas.stale(directory)
    for name in stale:
        print(f"stale: {directory / name}", file=sys.stderr)
    return 1 if stale else 0


def _topics(args: argparse.Namespace) -> int:
    from acesteps.kafka.admin import ensure_topics
    from acesteps.settings import CommonSettings, load_settings

    settings = load_settings(CommonSettings)
    specs = settings.topics.specs(partitions=args.partitions)
    asyncio.run(ensure_topics(settings.kafka_bootstrap, specs))
    for spec in specs:
        print(spec.name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acesteps", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("schemas", help="JSON Schemas of the topic messages")
    p.add_argument("action", choices=["export", "check"])
    p.add_argument("--dir", default=str(schemas.DEFAULT_DIR))
    p.set_defaults(func=_schemas)

    p = sub.add_parser("topics", help="Kafka topics")
    p.add_argument("action", choices=["create"])
    p.add_argument("--partitions", type=int, default=6)
    p.set_defaults(func=_topics)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
