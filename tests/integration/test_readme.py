"""The README's shell examples run as written, against the live session stack (Triton + gateway).

Every ```bash block of the README is preceded by a marker: `<!-- test_readme: live -->` (run here, in order, in
one folder that stands for the project's: `.venv/bin/emotorch` and `.venv/bin/python` are the project's) or
`<!-- test_readme: not run: <why> -->`. The gateway's URL replaces `http://127.0.0.1:8080`. curl runs with
`--fail-with-body` (any HTTP error fails the block) and reports each status on stderr, so each request's
status is checked against what its route answers on success.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.integration]

README = PROJECT_ROOT / "README.md"
README_URL = "http://127.0.0.1:8080"
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!-- test_readme: (live|not run: .+) -->")
STATUS_LINE = re.compile(r"^curl-status (\d{3}) (\S+) (\S+)$", re.M)
# What each route answers on success (any other status fails the example).
SUCCESS = {"/v1/emotions": 200, "/v1/recommendations": 200, "/v1/model": 200, "/v1/feedback": 201,
           "/v1/sessions/": 204}  # fmt: skip


@dataclass(frozen=True)
class Block:
    line: int  # where it starts in the README (for failure messages)
    marker: str  # "live", "not run: ...", or "" when the marker is missing
    code: str


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for match in BASH_BLOCK.finditer(text):
        previous_line = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.fullmatch(previous_line.strip())
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(line, marker.group(1) if marker else "", match.group(1)))
    return blocks


def json_documents(text: str) -> list[object]:
    """The JSON values printed one after another (curl adds no newline between answers)."""
    decoder, documents, i = json.JSONDecoder(), [], 0
    while (i := len(text) - len(text[i:].lstrip())) < len(text):
        document, i = decoder.raw_decode(text, i)
        documents.append(document)
    return documents


def test_every_bash_block_says_whether_the_test_runs_it() -> None:
    blocks = readme_blocks()
    unmarked = [b.line for b in blocks if not b.marker]
    assert not unmarked, f"README bash blocks at lines {unmarked} need a <!-- test_readme: ... --> marker"
    assert sum(b.marker == "live" for b in blocks) >= 5


@pytest.fixture(scope="module")
def project_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the README's relative paths work: `.venv/bin/` runs this checkout's code."""
    root = tmp_path_factory.mktemp("readme")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, command in (("emotorch", f'"{sys.executable}" -m emotorch.cli'), ("python", f'"{sys.executable}"')):
        (bin_dir / name).write_text(f'#!/bin/sh\nPYTHONPATH="{PROJECT_ROOT}" exec {command} "$@"\n')
        (bin_dir / name).chmod(0o755)
    # curl reads $CURL_HOME/.curlrc: fail on HTTP errors, keep errors visible, report every status on stderr.
    (root / ".curlrc").write_text(
        'fail-with-body\nsilent\nshow-error\nwrite-out = "%{stderr}\\ncurl-status %{http_code} %{method} %{url}\\n"\n'
    )
    return root


def run_block(block: Block, folder: Path, gateway_url: str) -> subprocess.CompletedProcess[str]:
    code = block.code.replace(README_URL, gateway_url)
    return subprocess.run(["bash", "-eu", "-o", "pipefail", "-c", code], cwd=folder, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "CURL_HOME": str(folder), "HOME": str(folder)},
                          check=False)  # fmt: skip


def check_requests(block: Block, stderr: str) -> int:
    """Every curl of the block ran and got its route's success status; returns how many ran."""
    requests = STATUS_LINE.findall(stderr)
    assert len(requests) >= block.code.count("curl "), f"README line {block.line}: a curl did not run\n{stderr}"
    for status, method, url in requests:
        path = urlsplit(url).path
        expected = next(status for route, status in SUCCESS.items() if path.startswith(route))
        assert int(status) == expected, f"README line {block.line}: {method} {url} answered {status}\n{stderr}"
    return len(requests)


def check_answers(block: Block, stdout: str) -> None:
    """The answers printed are the routes' documents: faces found in the sample photos, items recommended."""
    for document in json_documents(stdout):
        assert isinstance(document, dict), f"README line {block.line}: {document!r}"
        if "faces" in document and "recommendation_id" not in document:  # /v1/emotions: every sample has a face
            assert document["faces"] and set(document["faces"][0]["probabilities"]) >= {"happy", "sad"}
        if "recommendation_id" in document:
            assert document["domains"] and all(document["domains"].values())
            if document.get("face") is not None:  # read from a photo: the face read is the first of those found
                assert document["faces"] and document["faces"][0] == document["face"]
        if "counted" in document:
            assert document["recorded"] is True


def test_readme_examples_run_as_written(project_like: Path, gateway_url: str) -> None:
    live = [b for b in readme_blocks() if b.marker == "live"]
    requests = 0
    for block in live:
        result = run_block(block, project_like, gateway_url)
        failure = f"README line {block.line} failed:\n{block.code}\n{result.stdout}\n{result.stderr}"
        assert result.returncode == 0, failure
        if "curl " in block.code:
            requests += check_requests(block, result.stderr)
            check_answers(block, result.stdout)
        if "emotorch samples" in block.code:
            assert {p.name for p in (project_like / "samples").iterdir()} >= {"selfie.jpg", "face.jpg"}
        if "emotorch predict" in block.code:
            photos = re.findall(r"samples/(\S+\.jpg)", block.code)
            assert all(photo in result.stdout for photo in photos), result.stdout
            assert f"{len(photos)} of {len(photos)} photo(s) analysed by model emotion" in result.stdout
    print(f"README: {len(live)} bash examples run, {requests} HTTP requests")  # noqa: T201
    assert requests >= 8
