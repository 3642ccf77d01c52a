"""`sluice` command line: `sluice serve` and `sluice bench`."""

from __future__ import annotations

import argparse
import sys

from sluice import config as config_mod


def _serve(args: argparse.Namespace) -> int:
    from sluice.service import StartupError, run_in_own_session, serve_forever

    if not args.in_session:
        # The Ray driver runs in a child in its own session: a terminal's Ctrl-C (sent to
        # the whole process group) would otherwise kill Ray's daemons before the flush.
        return run_in_own_session(
            [sys.executable, "-m", "sluice.cli", *sys.argv[1:], "--in-session"]
        )
    try:
        config = config_mod.load(
            args.config,
            host=args.host,
            port=args.port,
            sinks=args.sink,
            write_keys=args.write_key,
            log_dir=args.log_dir,
        )
        return serve_forever(config, args.address)
    except (config_mod.ConfigError, StartupError) as exc:
        print(f"sluice: error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice", description="Self-hosted, Segment-compatible event collector on Ray."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service until SIGINT/SIGTERM")
    serve.add_argument("--config", help="YAML configuration file")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    serve.add_argument(
        "--sink",
        action="append",
        metavar="URI",
        help="file://DIR, s3://BUCKET/PREFIX or kinesis://STREAM; repeatable (default file://./data)",
    )
    serve.add_argument(
        "--write-key",
        action="append",
        metavar="KEY[:SOURCE]",
        help="accepted write key; repeatable (also SLUICE_WRITE_KEYS)",
    )
    serve.add_argument(
        "--log-dir", help="where producers keep their logs (default /dev/shm/sluice/<port>)"
    )
    serve.add_argument(
        "--address", help="Ray cluster to deploy onto (default: RAY_ADDRESS, else a local Ray)"
    )
    serve.add_argument("--in-session", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sluice` command."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
