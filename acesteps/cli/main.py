"""The ``acesteps`` command.

acesteps generate PROMPT [...]        submit to the HTTP API, wait, download and check the audio
acesteps status ID [--json]           one request's record from the HTTP API
acesteps cancel ID [--json]           stop a request this API key submitted
acesteps upload FILE                  send an audio file to edit (generate --source-upload CID)
acesteps verify ID [--file F]         check a track against its on-chain registration (ID:
                                      request id, CID or gateway URL; --file F alone: by audioHash)
acesteps reproduce ID                 re-run a track from its manifest and compare, byte for byte
acesteps models pull NAME | list      fetch a checkpoint (checked file by file); what is here
acesteps schemas export|check         the topics' JSON Schemas (check: current, compatible)
acesteps topics create                create the topics on the configured Kafka
acesteps contracts deploy             deploy the registry; write its deployment artifact
acesteps contracts build|check        compile the contract (a checkout with solc-js)
acesteps up | demo | down             the whole service on this machine (a checkout)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from acesteps import __version__, schemas
from acesteps.cli import cancel, generate, listing, models, reproduce, upload, verify

__all__ = ["build_parser", "main"]


def _schemas(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if args.action == "export":
        for path in schemas.export(directory):
            print(path)
        return 0
    stale = schemas.stale(directory)
    for name in stale:
        print(f"stale: {directory / name}", file=sys.stderr)
    released = Path(args.released)
    if not any(released.glob("*.json")):
        print(f"no released schemas in {released}", file=sys.stderr)
        return 1
    breaking = schemas.breaking_changes(schemas.load(released), schemas.current())
    for line in breaking:
        print(f"breaking: {line}", file=sys.stderr)
    return 1 if stale or breaking else 0


def _topics(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaConnectionError

    from acesteps.kafka import connection
    from acesteps.kafka.admin import ensure_topics
    from acesteps.settings import CommonSettings, load_settings

    settings = load_settings(CommonSettings)
    connection.configure(settings.kafka_security())
    if args.partitions is not None:
        settings = settings.with_overrides(kafka_partitions=args.partitions)
    specs = settings.topic_specs()
    try:
        mismatches = asyncio.run(ensure_topics(settings.kafka_bootstrap, specs))
    except KafkaConnectionError as exc:
        # aiokafka has logged each broker's reason above (refused, TLS, SASL credentials).
        print(f"error: {exc}; the reason for each broker is logged above", file=sys.stderr)
        return 1
    for spec in specs:
        print(spec.name)
    for line in mismatches:
        print(line, file=sys.stderr)
    return 1 if mismatches else 0


def _contracts(args: argparse.Namespace) -> int:
    if args.action == "deploy":
        return asyncio.run(_deploy(args))
    from acesteps.dev import contracts  # solc-js, in a checkout

    if args.action == "build":
        for path in contracts.build():
            print(path)
        return 0
    stale = contracts.stale()
    for name in stale:
        print(f"stale: contracts/abi/{name} (run `acesteps contracts build`)", file=sys.stderr)
    return 1 if stale else 0


async def _deploy(args: argparse.Namespace) -> int:
    from eth_account import Account

    from acesteps.artifact import artifact_dir, write_artifact
    from acesteps.chain import DEFAULT_RECLAIM_AFTER_BLOCKS, connect, deploy_registry
    from acesteps.registry import Registry
    from acesteps.settings import ChainSettings, ConfigError, load_settings

    settings = load_settings(ChainSettings)
    w3 = connect(settings.rpc_url)
    try:
        chain_id = await w3.eth.chain_id
        try:
            if args.dev_account is not None:
                from acesteps.dev.devchain import dev_key

                key = dev_key(args.dev_account, chain_id)
            else:
                key = settings.signing_key()
        except (ConfigError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        publisher = args.publisher or Account.from_key(key).address
        delay = settings.reclaim_after_blocks or DEFAULT_RECLAIM_AFTER_BLOCKS
        deployment = await deploy_registry(w3, key, publisher, args.fee, delay)
        out = Path(args.out) if args.out else settings.deployment_file
        deployment.save(out)
        artifacts = Path(args.artifacts) if args.artifacts else artifact_dir(out)
        path = await write_artifact(Registry(w3, deployment.address), deployment, artifacts)
    finally:
        await w3.provider.disconnect()
    print(deployment.model_dump_json())
    print(f"deployment artifact for dApps: {path}", file=sys.stderr)
    return 0


def _local(args: argparse.Namespace) -> int:
    from acesteps.dev import localrun  # the local stack, in a checkout

    if args.command == "up":
        print(json.dumps(localrun.up()))
    elif args.command == "down":
        localrun.down()
    else:
        lines = localrun.demo(args.prompt, args.duration, args.timeout)
        for line in lines:
            print(json.dumps(line), flush=True)
        print(localrun.model_notice(lines), file=sys.stderr)
        return 0 if all(line["verified"] == "MATCH" for line in lines) else 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acesteps", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"acesteps {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="request a track from the HTTP API and download it")
    generate.add_generate_arguments(p)
    p.set_defaults(func=lambda a: asyncio.run(generate.run_generate_cli(a)))

    p = sub.add_parser("status", help="a request's record from the HTTP API")
    generate.add_status_arguments(p)
    p.set_defaults(func=lambda a: asyncio.run(generate.run_status_cli(a)))

    p = sub.add_parser("cancel", help="stop a request this API key submitted")
    cancel.add_arguments(p)
    p.set_defaults(func=lambda a: asyncio.run(cancel.run_cli(a)))

    p = sub.add_parser("upload", help="send an audio file to the HTTP API, to edit it")
    upload.add_arguments(p)
    p.set_defaults(func=lambda a: asyncio.run(upload.run_cli(a)))

    p = sub.add_parser("list", help="your requests from the HTTP API, newest first")
    listing.add_arguments(p)
    p.set_defaults(func=lambda a: asyncio.run(listing.run_cli(a)))

    p = sub.add_parser("verify", help="check a track against its on-chain registration")
    verify.add_arguments(p)
    p.set_defaults(func=lambda a: asyncio.run(verify.run_cli(a)))

    p = sub.add_parser("reproduce", help="re-run a track from its generation manifest")
    reproduce.add_arguments(p)
    p.set_defaults(func=lambda a: asyncio.run(reproduce.run_cli(a)))

    p = sub.add_parser("models", help="checkpoints: pull one from the hub, list those here")
    models.add_arguments(p)
    p.set_defaults(func=models.run_cli)

    p = sub.add_parser("schemas", help="JSON Schemas of the topic messages")
    p.add_argument("action", choices=["export", "check"])
    p.add_argument("--dir", default=str(schemas.PACKAGED_DIR))
    p.add_argument(
        "--released",
        default=str(schemas.RELEASED_DIR),
        help="check: the last released schemas, which the code must not break",
    )
    p.set_defaults(func=_schemas)

    p = sub.add_parser("topics", help="Kafka topics")
    p.add_argument("action", choices=["create"])
    p.add_argument(
        "--partitions", type=int, help="partitions of each topic (ACESTEPS_KAFKA_PARTITIONS)"
    )
    p.set_defaults(func=_topics)

    p = sub.add_parser("contracts", help="the AceStepsRegistry contract")
    p.add_argument("action", choices=["build", "check", "deploy"])
    p.add_argument("--publisher", help="address given the publisher role (default: deployer)")
    p.add_argument("--fee", type=int, default=0, help="request fee in wei (default 0)")
    p.add_argument(
        "--dev-account", type=int, help="sign with anvil's development account N (anvil only)"
    )
    p.add_argument("--out", help="deployment file (default: ACESTEPS_DEPLOYMENT_FILE)")
    p.add_argument(
        "--artifacts",
        help="folder of the dApps' deployment artifact <chainId>.json "
        "(default: deployments/ beside the deployment file)",
    )
    p.set_defaults(func=_contracts)

    sub.add_parser("up", help="deploy locally and start the services").set_defaults(func=_local)
    sub.add_parser("down", help="stop the services `up` started").set_defaults(func=_local)
    p = sub.add_parser("demo", help="one on-chain and one HTTP request through the whole pipeline")
    p.add_argument("--prompt", default="chill lofi beat with rain sounds")
    p.add_argument("--duration", type=int, default=30)
    p.add_argument("--timeout", type=float, default=600)
    p.set_defaults(func=_local)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
