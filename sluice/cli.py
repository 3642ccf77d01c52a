"""`sluice` command line: `sluice serve` and `sluice bench`."""

from __future__ import annotations

import argparse
import sys

from core import config as config_mod


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
            admin_token=args.admin_token,
        )
        return serve_forever(config, args.address, ray_dashboard=args.ray_dashboard)
    except (config_mod.ConfigError, StartupError) as exc:
        print(f"sluice: error: {exc}", file=sys.stderr)
        return 2


def _bench(args: argparse.Namespace) -> int:
    from bench.runner import main as bench_main  # Locust, pyarrow, matplotlib: only when asked

    return bench_main(args)


def _replay(args: argparse.Namespace) -> int:
    from sluice.replay import ReplayOptions, main, parse_time  # pyarrow: only when asked

    try:
        options = ReplayOptions(
            source_uri=args.source_uri,
            sink_uri=args.to,
            start=parse_time(args.start),
            end=parse_time(args.end),
            record_type=args.type,
            event=args.event,
            source=args.source,
            rate=args.rate,
            resume=args.resume,
        )
        if options.end <= options.start:
            raise config_mod.ConfigError("--end must be after --start")
        return main(options)
    except config_mod.ConfigError as exc:
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
    serve.add_argument(
        "--admin-token",
        help="token that opens /debugger and /v1/trace (also SLUICE_ADMIN_TOKEN; default: "
        "one made and printed at start)",
    )
    serve.add_argument(
        "--ray-dashboard",
        action="store_true",
        help="start Ray's dashboard (:8265) and state API with the local Ray (off: saves "
        "memory and start time)",
    )
    serve.add_argument("--in-session", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)

    bench = commands.add_parser(
        "bench",
        help="run the Locust benchmark against Sluice and the baseline; write a report",
        description="Run one Locust scenario headless against a Sluice it starts (or "
        "--target), count what reached the sink, run the same load against a bare "
        "uvicorn + Starlette + orjson baseline, and write a JSON report and a PNG plot.",
    )
    bench.add_argument(
        "--scenario",
        required=True,
        choices=("single", "batch", "gzip-batch", "websocket"),
        help="what to send",
    )
    bench.add_argument("--duration", type=int, default=60, metavar="S", help="seconds of load")
    bench.add_argument("--users", type=int, default=20, metavar="N", help="concurrent users")
    bench.add_argument(
        "--out", default="report.json", help="report file (JSON); the plot goes beside it (.png)"
    )
    bench.add_argument(
        "--target", metavar="URL", help="benchmark the Sluice at URL instead of starting one"
    )
    bench.add_argument(
        "--write-key",
        metavar="KEY",
        help="write key for --target (also SLUICE_BENCH_WRITE_KEY); default: a generated one",
    )
    bench.add_argument(
        "--sink-dir",
        metavar="DIR",
        help="with --target: the file sink's directory, to count events and losses",
    )
    bench.add_argument(
        "--workers", type=int, default=1, metavar="W", help="Locust processes (default 1)"
    )
    bench.add_argument(
        "--skip-baseline", action="store_true", help="do not run the baseline afterwards"
    )
    bench.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config for the Sluice it starts (to compare settings, e.g. enrich: [])",
    )
    bench.add_argument(
        "--sink-query",
        metavar="QUERY",
        help="settings of the file sink it audits, e.g. layout=tables",
    )
    bench.add_argument(
        "--extra-sink",
        action="append",
        metavar="URI",
        help="another sink beside the file sink (webhook+http://..., kinesis://...); repeatable",
    )
    bench.add_argument(
        "--work-dir",
        metavar="DIR",
        help="keep Locust's files, acked ids, logs and the sink here (default: a temp dir)",
    )
    bench.set_defaults(func=_bench)

    replay = commands.add_parser(
        "replay", help="deliver archived events (a file:// or s3:// Parquet tree) to a sink"
    )
    replay.add_argument(
        "--from", dest="source_uri", required=True, metavar="URI", help="file://DIR or s3://..."
    )
    replay.add_argument("--to", required=True, metavar="SINK_URI", help="any sink URI")
    replay.add_argument("--start", required=True, metavar="T", help="ISO-8601, UTC: from")
    replay.add_argument("--end", required=True, metavar="T", help="ISO-8601, UTC: until (excl.)")
    replay.add_argument("--type", help="only this record type (track, identify, ...)")
    replay.add_argument("--event", metavar="NAME", help="only track events of this name")
    replay.add_argument("--source", metavar="S", help="only events of this source")
    replay.add_argument("--rate", type=float, metavar="N", help="at most N events/s")
    replay.add_argument(
        "--resume", action="store_true", help="continue after what an earlier run delivered"
    )
    replay.set_defaults(func=_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sluice` command."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
