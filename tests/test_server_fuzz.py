"""A bounded fuzz pass over the server's OpenAPI schema (schemathesis): no input gives a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from server_proc import ServerProcess


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error(redis_url: str, tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    assert cli.exists(), "schemathesis is missing: pip install -e '.[dev]'"
    env = {"ORCHESTRATOR_MAX_CONCURRENT_RUNS": "1", "ORCHESTRATOR_MAX_QUEUED_RUNS": "2"}  # runs it starts stay few
    with ServerProcess(redis_url=redis_url, env=env) as srv:
        out = subprocess.run(
            [str(cli), "run", srv.url("/openapi.json"), "--checks", "not_a_server_error", "--max-examples", "10",
             "--seed", "16", "--request-timeout", "30", "--phases", "examples,coverage,fuzzing",
             "--continue-on-failure", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache stays out of the tree
        )
        report = out.stdout[-8000:] + out.stderr[-2000:]
        assert out.returncode == 0, report + "\nserver log:\n" + srv.log()
        assert " passed" in out.stdout and "failed" not in out.stdout.split("SUMMARY")[-1], report
