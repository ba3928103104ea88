"""`emotorch predict PHOTO...`: the emotions in photos, read by a running gateway, as a table."""

from __future__ import annotations

import logging
import mimetypes
import time
from pathlib import Path
from typing import Any, TextIO

import httpx
from tqdm import tqdm

HEADERS = ("photo", "face", "box (x,y,w,h)", "emotion", "confidence", "runner-up")
MAX_RETRY_WAIT_S = 10.0  # a gateway asking for a longer wait is reported instead of waited for
RETRIES = 3


def _rows(photo: Path, body: dict[str, Any]) -> list[tuple[str, ...]]:
    if not body["faces"]:
        return [(photo.name, "-", "-", "no face found", "-", "-")]
    rows: list[tuple[str, ...]] = []
    for i, face in enumerate(body["faces"], start=1):
        ranked = sorted(face["probabilities"].items(), key=lambda kv: -kv[1])
        emotion = face["emotion"] if not face.get("uncertain") else f"uncertain ({face['most_likely']}?)"
        runner_up = f"{ranked[1][0]} {ranked[1][1]:.2f}" if len(ranked) > 1 else "-"
        rows.append((photo.name, str(i), ",".join(map(str, face["box"])), emotion, f"{face['confidence']:.2f}",
                     runner_up))  # fmt: skip
    return rows


def _problem(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return f"HTTP {response.status_code}: {detail or response.text[:200]}"


def render_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS))]
    line = "  ".join

    def fmt(row: tuple[str, ...]) -> str:
        return line(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()

    return "\n".join([fmt(HEADERS), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in rows)])


def predict_photos(photos: list[Path], url: str, mode: str, consent: bool, timeout_s: float, out: TextIO) -> int:
    """Analyse each photo; print the table; 0 when every photo was analysed."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the table is the output, not a request log
    if not consent:
        out.write("error: pass --consent to confirm that the people in these photos agree to the analysis\n")
        return 2
    rows: list[tuple[str, ...]] = []
    failures: list[str] = []
    model = ""
    unreachable = ""
    analysed = 0
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s) as client:
        for photo in tqdm(photos, desc="photos", unit="photo", disable=None, file=None):
            try:
                data = photo.read_bytes()
            except OSError as e:
                failures.append(f"{photo}: {e.strerror or e}")
                continue
            content_type = mimetypes.guess_type(photo.name)[0] or "application/octet-stream"
            try:
                response = _post(client, photo.name, data, content_type, mode)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as e:
                unreachable = f"the gateway at {url} could not be reached ({e}); is `make up` running?"
                break
            except httpx.TimeoutException as e:
                failures.append(f"{photo}: the gateway did not answer within {timeout_s:g} s ({e})")
                continue
            except httpx.HTTPError:
                try:  # a failed answer may have closed the kept-alive connection: once more, on a new one
                    response = _post(client, photo.name, data, content_type, mode)
                except httpx.HTTPError as e:
                    failures.append(f"{photo}: no answer from the gateway ({e})")
                    continue
            if response.status_code != 200:
                failures.append(f"{photo}: {_problem(response)}")
                continue
            body = response.json()
            model = f"{body['model']['name']} v{body['model']['version']}"
            rows += _rows(photo, body)
            analysed += 1
    if rows:
        out.write(render_table(rows) + "\n")
        out.write(f"\n{analysed} of {len(photos)} photo(s) analysed by model {model}\n")
    for failure in failures:
        out.write(f"error: {failure}\n")
    if unreachable:
        out.write(f"error: {unreachable}\n")
    return 1 if failures or unreachable else 0


def _post(client: httpx.Client, name: str, data: bytes, content_type: str, mode: str) -> httpx.Response:
    """POST one photo; a gateway at capacity (503 or 429 with Retry-After) is given the wait it asks for."""
    for _ in range(RETRIES):
        response = client.post("/v1/emotions", files={"image": (name, data, content_type)},
                               data={"consent": "true", "mode": mode})  # fmt: skip
        wait = response.headers.get("retry-after", "")
        if response.status_code not in (429, 503) or not wait.isdigit() or float(wait) > MAX_RETRY_WAIT_S:
            return response
        time.sleep(float(wait))
    return response
