"""The `emotorch` command: run the stack, Triton or the gateway; read photos; write sample photos."""

from __future__ import annotations

import argparse
import ctypes
import logging
import sys
from pathlib import Path

from emotorch import __version__, triton_server
from emotorch.logs import configure_logging
from emotorch.triton_server import TritonPorts


def _add_triton_ports(parser: argparse.ArgumentParser, offset: int = 0) -> None:
    parser.add_argument("--http-port", type=int, default=8000 + offset, help="Triton HTTP port (default %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8001 + offset, help="Triton gRPC port (default %(default)s)")
    parser.add_argument(
        "--metrics-port", type=int, default=8002 + offset, help="Triton metrics port (default %(default)s)"
    )


def _cmd_triton(args: argparse.Namespace) -> int:
    ports = TritonPorts(args.http_port, args.grpc_port, args.metrics_port)
    triton_server.exec_triton(args.model_repository, ports, args.model, host=args.host,
                              config_name=args.model_config_name)  # fmt: skip
    return 1  # not reached: exec replaced this process


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before any thread starts: with one arena per worker thread (the default is
    8 per core) a threaded numpy/OpenCV service keeps fragmented memory and its RSS creeps up under load."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def _cmd_gateway(args: argparse.Namespace) -> int:
    import uvicorn

    _limit_malloc_arenas()

    from gateway.app import create_app
    from gateway.server import uvicorn_config
    from gateway.settings import Settings

    overrides = {"triton_url": args.triton_url} if args.triton_url else {}
    settings = Settings(**overrides)
    logging.getLogger("gateway.access").setLevel(args.log_level.upper())  # the access log follows --log-level
    uvicorn.Server(uvicorn_config(create_app(settings), settings, args.host, args.port, args.log_level)).run()
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from emotorch.stack import StackConfig, run_stack

    project_dir = Path.cwd()
    config = StackConfig(
        project_dir=project_dir,
        repository=args.model_repository,
        triton_ports=TritonPorts(args.http_port, args.grpc_port, args.metrics_port),
        gateway_port=args.port,
        prometheus_port=args.prometheus_port,
        mlflow_port=args.mlflow_port,
    )
    return run_stack(config)


def _cmd_predict(args: argparse.Namespace) -> int:
    from emotorch.predict import predict_photos

    return predict_photos(args.photos, args.url, args.mode, args.consent, args.timeout, sys.stdout)


def _cmd_samples(args: argparse.Namespace) -> int:
    from emotorch.samples import write_samples

    write_samples(args.folder, sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotorch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"emotorch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_up_command(sub)
    _add_triton_command(sub)
    _add_gateway_command(sub)
    _add_predict_command(sub)
    _add_samples_command(sub)
    return parser


def _add_up_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser(
        "up",
        help="reproduce the pipeline, then start Triton, the gateway, Prometheus and the MLflow UI",
        description="Bring the local stack up: `dvc repro` (builds the emotion model and MTCNN's networks when "
        "missing, and makes the model repository and MLflow's champion match the pipeline's decision), then "
        "Triton Inference Server (the model repository), the gateway (API, demo page, /metrics), Prometheus "
        "(scraping both, with the project's rules; skipped with a warning when not installed) and the MLflow UI "
        "(one worker, opened on the training runs). Prints each URL when all are ready; Ctrl-C stops everything.",
    )
    up.add_argument("--port", type=int, default=8080, help="gateway port (default %(default)s)")
    up.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    up.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port (default %(default)s)")
    up.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port (default %(default)s)")
    _add_triton_ports(up, offset=0)
    up.set_defaults(func=_cmd_up)


def _add_triton_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    triton = sub.add_parser(
        "triton",
        help="run the Triton server bundled in nvidia-pytriton",
        description="Run Triton against the model repository (explicit model control).",
    )
    triton.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    triton.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all interfaces)")
    triton.add_argument(
        "--model", action="append", default=None, help="model to load at start (repeatable; default: emotion)"
    )
    triton.add_argument(
        "--model-config-name",
        default=None,
        help="serve <model>/configs/NAME.pbtxt instead of config.pbtxt (publish writes 'libtorch' for the NGC image)",
    )
    _add_triton_ports(triton)
    triton.set_defaults(func=_cmd_triton)


def _add_gateway_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gateway = sub.add_parser(
        "gateway",
        help="run the FastAPI gateway",
        description="Serve the gateway; settings also come from EMOTORCH_* variables.",
    )
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8080)
    gateway.add_argument("--triton-url", default=None, help="Triton gRPC host:port (EMOTORCH_TRITON_URL)")
    gateway.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    gateway.set_defaults(func=_cmd_gateway)


def _add_predict_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    predict = sub.add_parser(
        "predict",
        help="read the emotions in photos through a running gateway and print a table",
        description="Send each photo to a running gateway (POST /v1/emotions) and print one row per face. "
        "Exit status 0 when every photo was analysed, 1 otherwise.",
    )
    predict.add_argument("photos", nargs="+", type=Path, metavar="PHOTO", help="JPEG, PNG or WebP files")
    predict.add_argument("--url", default="http://127.0.0.1:8080", help="gateway base URL (default %(default)s)")
    predict.add_argument("--mode", choices=["photo", "face", "closeup"], default="photo",
                         help="photo: find every face; face: each file is one face crop; closeup: each file is a "
                         "close-up of one face, read only if a face is found in it")  # fmt: skip
    predict.add_argument(
        "--consent",
        action="store_true",
        help="confirm that the people in the photos consent to the analysis (required: the gateway refuses otherwise)",
    )
    predict.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default %(default)s)")
    predict.set_defaults(func=_cmd_predict)


def _add_samples_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    samples = sub.add_parser(
        "samples",
        help="write sample photos (from installed packages) for the README's examples",
        description="Write selfie.jpg (skimage's astronaut), face.jpg (a close-up of her face, for mode=face), "
        "two-people.jpg (with matplotlib's Grace Hopper) and coffee.jpg (no face) into FOLDER. Nothing is "
        "downloaded: the photos ship with scikit-image and matplotlib.",
    )
    samples.add_argument("folder", type=Path, nargs="?", default=Path("samples"), metavar="FOLDER",
                         help="where to write them (default %(default)s, ignored by git)")  # fmt: skip
    samples.set_defaults(func=_cmd_samples)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(timestamps=True)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
