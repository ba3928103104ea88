"""Overload benchmark: one client bursts image requests while a polite client and a health probe carry on.

Starts Triton (the small network, untrained seeded weights: speed does not need training) and the gateway with
its default limits on free loopback ports, then, at once:
  burst    from 127.0.0.2: `--burst` photo requests (640x480 JPEG, POST /v1/emotions) spread evenly over
           `--seconds`, each sent on schedule whatever the answers (open loop, as a hostile client does);
  polite   from 127.0.0.3: one photo request every `--polite-interval` seconds, waiting for each answer;
  health   from 127.0.0.4: GET /healthz every 50 ms (what a Kubernetes liveness probe sees).
Any 127.x.y.z address is this machine, and the gateway tells clients apart by address. Prints a table per
client (answers by status, latency percentiles) and the accepted/refused split of the burst; stops everything.
`--gateway-source DIR` runs the gateway from another checkout (e.g. the code before admission control).

    python bench/overload.py [--burst 500] [--seconds 5] [--json out.json] [--gateway-source ../main]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.serving.inputs import build_torchscript, make_inputs  # noqa: E402
from bench.serving.load import multipart  # noqa: E402
from bench.serving.servers import free_port, spawn  # noqa: E402
from emotorch import processes, triton_server  # noqa: E402
from emotorch.triton_server import TritonPorts  # noqa: E402
from gateway.imaging import FER_MARGIN  # noqa: E402
from pipelines.labels import LABELS  # noqa: E402
from pipelines.model import input_size  # noqa: E402
from pipelines.repository import publish_version  # noqa: E402
from pipelines.triton_config import PublishParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEALTH_INTERVAL_S = 0.05


@dataclass
class Client:
    name: str
    answers: list[tuple[int, float, bool]] = field(default_factory=list)  # status, seconds, has Retry-After

    def summary(self, statuses: tuple[int, ...] | None = None) -> dict[str, float | int]:
        rows = [a for a in self.answers if statuses is None or a[0] in statuses]
        ms = np.array([s * 1000 for _, s, _ in rows]) if rows else np.zeros(1)
        counts = {str(code): sum(1 for a in rows if a[0] == code) for code in sorted({a[0] for a in rows})}
        return {"n": len(rows), **counts, "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
                "refusals_without_retry_after": sum(1 for c, _, r in rows if c in (429, 503) and not r)}  # fmt: skip


@contextlib.contextmanager
def servers(work: Path, gateway_source: Path) -> Iterator[str]:
    """Triton with the small network and the gateway (default limits); yields the gateway URL."""
    repository = work / "model_repository"
    params = PublishParams()
    publish_version(repository, build_torchscript("small", work / "model.pt"), {"labels": list(LABELS)}, params)
    ports = TritonPorts(free_port(), free_port(), free_port())
    with contextlib.ExitStack() as stack:
        triton = triton_server.start_triton(repository, ports, [params.model_name], cache_dir=work,
                                            log_file=work / "triton.log")  # fmt: skip
        stack.callback(triton_server.stop, triton)
        triton_server.wait_until_ready(triton, ports.http, [params.model_name], timeout_s=180)
        port = free_port()
        env = {**os.environ, "EMOTORCH_DATABASE_URL": f"sqlite:///{work / 'feedback.db'}",
               "PYTHONPATH": str(gateway_source)}  # fmt: skip
        command = [sys.executable, "-m", "emotorch.cli", "gateway", "--port", str(port),
                   "--triton-url", f"127.0.0.1:{ports.grpc}", "--log-level", "warning"]  # fmt: skip
        gateway = spawn(command, env, work / "gateway.log") if gateway_source == ROOT else \
            _spawn_elsewhere(command, env, work / "gateway.log", gateway_source)  # fmt: skip
        stack.callback(processes.stop, gateway)
        processes.wait_http_ok(f"http://127.0.0.1:{port}/readyz", gateway, 120, "gateway", work / "gateway.log")
        yield f"http://127.0.0.1:{port}"


def _spawn_elsewhere(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """The gateway of another checkout: `python -m` puts the working directory first on sys.path."""
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


async def _send(session: aiohttp.ClientSession, client: Client, method: str, url: str, **kwargs: object) -> None:
    started = time.perf_counter()
    try:
        async with session.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
            await response.read()
            client.answers.append((response.status, time.perf_counter() - started, "Retry-After" in response.headers))
    except (aiohttp.ClientError, TimeoutError):
        client.answers.append((0, time.perf_counter() - started, False))


def _session(source: str) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), limit=0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))


async def run_load(url: str, burst: int, seconds: float, polite_interval_s: float) -> dict[str, Client]:
    inputs = make_inputs(input_size("small"), FER_MARGIN)  # only the selfie is sent: the crop size is moot
    body, content_type = multipart({"consent": "true"}, "selfie.jpg", "image/jpeg", inputs.selfie_jpeg)
    post = {"data": body, "headers": {"Content-Type": content_type}}
    clients = {name: Client(name) for name in ("burst", "polite", "health")}
    done = asyncio.Event()
    start = time.perf_counter()

    async def bursting() -> None:
        async with _session("127.0.0.2") as session:
            tasks = []
            for i in range(burst):
                await asyncio.sleep(max(0.0, start + i * seconds / burst - time.perf_counter()))
                tasks.append(
                    asyncio.create_task(_send(session, clients["burst"], "POST", f"{url}/v1/emotions", **post))
                )
            await asyncio.gather(*tasks)

    async def polite() -> None:
        async with _session("127.0.0.3") as session:
            while not done.is_set():
                await _send(session, clients["polite"], "POST", f"{url}/v1/emotions", **post)
                await asyncio.sleep(polite_interval_s)

    async def health() -> None:
        async with _session("127.0.0.4") as session:
            while not done.is_set():
                await _send(session, clients["health"], "GET", f"{url}/healthz")
                await asyncio.sleep(HEALTH_INTERVAL_S)

    others = [asyncio.create_task(polite()), asyncio.create_task(health())]
    await bursting()
    done.set()
    await asyncio.gather(*others)
    return clients


def render(result: dict[str, dict[str, float | int]]) -> str:
    lines = ["| client | answers | by status | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    for name, s in result.items():
        statuses = ", ".join(f"{k}: {v}" for k, v in s.items() if k.isdigit())
        lines.append(f"| {name} | {s['n']} | {statuses} | {s['p50_ms']:.0f} | {s['p99_ms']:.0f} | {s['max_ms']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=500, help="image requests the bursting client sends")
    parser.add_argument("--seconds", type=float, default=5.0, help="over how long it sends them")
    parser.add_argument("--polite-interval", type=float, default=0.5, help="seconds between polite requests")
    parser.add_argument("--gateway-source", type=Path, default=ROOT, help="checkout whose gateway code runs")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="emotorch-overload-") as tmp, \
            servers(Path(tmp), args.gateway_source.resolve()) as url:  # fmt: skip
        clients = asyncio.run(run_load(url, args.burst, args.seconds, args.polite_interval))
    result = {
        "burst (all)": clients["burst"].summary(),
        "burst accepted (200)": clients["burst"].summary((200,)),
        "burst refused (429/503)": clients["burst"].summary((429, 503)),
        "polite": clients["polite"].summary(),
        "healthz": clients["health"].summary(),
    }
    polite = clients["polite"].answers
    success = sum(1 for a in polite if a[0] == 200) / max(1, len(polite))
    print(render(result))  # noqa: T201 - the bench's output
    print(f"\npolite client success: {success:.0%} of {len(polite)}")  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps({"figures": result, "polite_success": success, "args": {
            k: str(v) for k, v in vars(args).items()}}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
