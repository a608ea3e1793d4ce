"""``python -m recsys_course.serving``: run the practice server until Ctrl-C.

Examples::

    # every sub-folder of models/ is a model; REST on 8501
    python -m recsys_course.serving --model-base-path models/ --port 8501

    # one model, REST and gRPC, as TF Serving's --model_name/--model_base_path
    python -m recsys_course.serving --model-name retrieval \\
        --model-base-path models/retrieval --port 8501 --grpc-port 8500

    # a TF Serving model config file (version policies, labels), re-read when it changes
    python -m recsys_course.serving --model-config-file models/models.local.config

It is a practice stand-in for TensorFlow Serving, not TF Serving itself, and listens on
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from recsys_course.serving import DEFAULT_REST_PORT
from recsys_course.serving.limits import PredictLimits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_course.serving",
        description="Practice stand-in for TensorFlow Serving's REST (and gRPC) API, on 127.0.0.1.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-base-path", help="a model's base path, or a folder of models")
    source.add_argument("--model-config-file", help="a TF Serving model config file")
    parser.add_argument("--model-name", help="name of the single model at --model-base-path")
    parser.add_argument("--port", type=int, default=DEFAULT_REST_PORT, help="REST port (default 8501)")
    parser.add_argument("--grpc-port", type=int, default=None, help="also serve gRPC on this port")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="re-scan interval (default 1)")
    parser.add_argument("--no-warmup", action="store_true", help="skip warm-up requests")
    parser.add_argument("--quiet", action="store_true", help="do not log requests and model events")
    limits = parser.add_argument_group("limits of the REST listener")
    limits.add_argument("--threads", type=int, default=8,
                        help="worker threads kept for status, metadata and errors (default 8); the server adds "
                             "one per predict slot and queue place")
    limits.add_argument("--connection-limit", type=int, default=1000,
                        help="open connections at most (default 1000; lowered to fit the file limit)")
    limits.add_argument("--max-body-bytes", type=int, default=16 * 2**20,
                        help="largest request body, else 413 (default 16 MiB)")
    limits.add_argument("--header-timeout", type=float, default=20.0,
                        help="seconds a request may take to arrive, else 408 (default 20)")
    limits.add_argument("--idle-timeout", type=float, default=60.0,
                        help="seconds an idle keep-alive connection stays open (default 60)")
    work = parser.add_argument_group(
        "limits of predict work (REST and gRPC; TF Serving's batching parameters, each request one batch)"
    )
    work.add_argument("--max-batch-size", type=int, default=1000,
                      help="instances per request at most, else 400 / INVALID_ARGUMENT (default 1000)")
    work.add_argument("--num-batch-threads", type=int, default=8,
                      help="predict requests computing at once, REST and gRPC together (default 8)")
    work.add_argument("--max-enqueued-batches", type=int, default=64,
                      help="predict requests waiting for a thread, beyond them 503 / UNAVAILABLE (default 64)")
    work.add_argument("--rest-api-timeout-in-ms", type=int, default=30_000,
                      help="REST deadline, else 504; 0 for none (default 30000, as TF Serving)")
    work.add_argument("--max-response-bytes", type=int, default=64 * 2**20,
                      help="largest answer, else 400 / RESOURCE_EXHAUSTED (default 64 MiB)")
    return parser


def raise_file_limit(wanted: int = 8192) -> None:
    """Raise the soft limit on open files towards the hard limit (never above it): every
    client connection holds one, and the default soft limit is often 1024."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # checked before TensorFlow is imported: a wrong limit fails at once
        predict_limits = PredictLimits(
            max_batch_size=args.max_batch_size, num_batch_threads=args.num_batch_threads,
            max_enqueued_batches=args.max_enqueued_batches, rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
            max_response_bytes=args.max_response_bytes,
        )
    except ValueError as error:
        parser.error("--" + str(error).replace("_", "-"))  # exits with status 2, naming the option
    import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

    from recsys_course.serving.server import HttpLimits, PracticeServer

    raise_file_limit()
    limits = HttpLimits(
        threads=args.threads, connection_limit=args.connection_limit, max_body_bytes=args.max_body_bytes,
        header_timeout=args.header_timeout, idle_timeout=args.idle_timeout,
    )
    server = PracticeServer(
        model_base_path=args.model_base_path, model_name=args.model_name,
        model_config_file=args.model_config_file, port=args.port, grpc_port=args.grpc_port,
        poll_seconds=args.poll_seconds, warmup=not args.no_warmup, verbose=not args.quiet,
        log_requests=not args.quiet, limits=limits,
        predict_limits=predict_limits,
    )
    stop = threading.Event()
    # Handle Ctrl-C (SIGINT) and SIGTERM explicitly: a shell that starts the server in the
    # background may have set SIGINT to "ignore", and Python would inherit that.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server.start()
    except OSError as error:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {error}", file=sys.stderr)
        return 2
    models = ", ".join(server.repository.model_names()) or "none yet"
    grpc_note = f", gRPC on {server.grpc_target}" if server.grpc_port else ""
    print(
        f"Practice server (a stand-in for TensorFlow Serving) on {server.rest_url}{grpc_note}; "
        f"models: {models}. Press Ctrl-C to stop.",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print("Practice server stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
