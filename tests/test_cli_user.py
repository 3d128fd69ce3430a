"""The user commands of `weft` against a real stack: each command's output (text and --json) and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cli.main import main
from libs.security.auth import issue_token
from weft_client import Client

ROOT = Path(__file__).resolve().parents[1]
GREETER = {"nodes": [
    {"id": "step_1", "type": "transform", "config": {"template": {"greeting": "Hello ${inputs.name}"}}},
    {"id": "step_2", "type": "echo", "input_from": "step_1"},
]}


@pytest.fixture
def weft(stack, tenant, monkeypatch, capsys):
    """Run `weft ARGS...` in-process as the tenant's user; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("WEFT_URL", stack.base_url)
    monkeypatch.setenv("WEFT_TOKEN", issue_token(stack.settings, tenant, "alice", email="approver@localhost"))

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _create(weft, tmp_path: Path, definition=GREETER, name: str | None = None) -> str:
    path = tmp_path / f"{uuid.uuid4().hex}.json"
    path.write_text(json.dumps({"name": name or f"wf-{uuid.uuid4().hex[:8]}", "definition": definition}))
    code, out, err = weft("workflows", "create", "-f", str(path), "--json")
    assert code == 0, err
    return json.loads(out)["id"]


def test_workflows_create_list_get_delete(weft, tmp_path):
    path = tmp_path / "greeter.json"
    path.write_text(json.dumps({"name": "Greeter", "definition": GREETER}))
    code, out, _ = weft("workflows", "create", "-f", str(path))
    assert code == 0 and out.startswith("created ") and "Greeter  (active)" in out
    wid = out.split()[1]
    code, out, _ = weft("workflows", "list")
    assert code == 0 and out.splitlines()[0].split() == ["ID", "NAME", "STATUS", "VERSION", "UPDATED"]
    assert f"{wid}  Greeter  active" in out
    code, out, _ = weft("workflows", "list", "--json")
    assert code == 0 and json.loads(out)["count"] == 1 and json.loads(out)["workflows"][0]["id"] == wid
    code, out, _ = weft("workflows", "get", "Greeter")  # by exact name
    assert code == 0 and f"Greeter  ({wid})" in out and "step_2  echo" in out
    code, out, _ = weft("workflows", "delete", wid, "--json")
    assert code == 0 and json.loads(out) == {"id": wid, "message": "Workflow deleted successfully"}
    code, out, err = weft("workflows", "get", wid)
    assert (code, out) == (3, "") and err == "weft: Workflow not found [HTTP 404]\n"
    code, _, err = weft("workflows", "create", "-f", str(tmp_path / "missing.json"))
    assert code == 2 and err.startswith("weft: ") and err.count("\n") == 1


def test_run_wait_follow_and_json(weft, tmp_path):
    wid = _create(weft, tmp_path)
    code, out, _ = weft("run", wid, "--input", "name=Ada", "--wait")
    assert code == 0 and "completed" in out.splitlines()[0] and 'outputs: {"greeting":"Hello Ada"}' in out
    code, out, _ = weft("run", wid, "-i", "name=Bo", "--follow")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("run ") and f"of {wid}" in lines[0]
    assert any(line.startswith("[+] step_2") and "completed" in line for line in lines)
    assert "run completed" in lines
    code, out, _ = weft("run", wid, "-i", "name=Cy", "--follow", "--json")
    *events, final = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and events[-1]["type"] == "workflow_complete" and final["status"] == "completed"
    assert final["outputs"] == {"greeting": "Hello Cy"}
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    code, out, _ = weft("run", wid, "-i", "name=Di", "--json")
    run = json.loads(out)
    assert code == 0 and run["inputs"] == {"name": "Di"}
    code, out, _ = weft("runs", "list", wid, "--json")
    assert code == 0 and json.loads(out)["count"] == 4
    code, out, _ = weft("runs", "get", wid, run["id"])
    assert code == 0 and out.startswith(f"run {run['id']}")
    code, _, err = weft("run", wid, "--input", "novalue")
    assert code == 2 and err == "weft: --input must be key=value, got 'novalue'\n"


def test_a_failed_run_exits_1_and_for_each_shows_its_rows(weft, tmp_path):
    failing = {"nodes": [{"id": "boom", "type": "transform", "config": {"template": {"x": "${steps.nope.output}"}}}]}
    wid = _create(weft, tmp_path, failing)
    code, out, _ = weft("run", wid, "--wait")
    assert code == 1 and "failed" in out.splitlines()[0]
    rows = {"nodes": [{"id": "each", "type": "for_each",
                       "config": {"items": [1, 2, 3], "step": {"type": "echo", "config": {}}}}]}
    wid = _create(weft, tmp_path, rows)
    code, out, _ = weft("run", wid, "--follow")
    assert code == 0, out
    assert "[####################] 3/3 rows" in out


def test_runs_cancel(weft, tmp_path):
    slow = {"nodes": [{"id": "wait", "type": "delay", "config": {"seconds": 60}}]}
    wid = _create(weft, tmp_path, slow)
    code, out, err = weft("run", wid, "--wait", "--timeout", "1")
    assert code == 7 and out == "" and err.startswith("weft: run ") and "still running after 1.0s" in err
    rid = err.split()[2]
    code, _, err = weft("run", wid)  # one active run at a time
    assert code == 4 and "[HTTP 409]" in err
    code, out, _ = weft("runs", "cancel", wid, rid)
    assert (code, out) == (0, f"terminated {rid}\n")
    code, _, err = weft("runs", "cancel", wid, rid)
    assert code == 2 and "Run is already terminated" in err and err.count("\n") == 1  # spec E: 400


def test_approvals_list_approve_reject(stack, tenant, weft, tmp_path):
    gate = {"nodes": [{"id": "check", "type": "approval", "config": {"title": "Ship it?", "rows": [{"a": 1}]}},
                      {"id": "after", "type": "echo", "input_from": "check"}], "concurrency": "unlimited"}
    wid = _create(weft, tmp_path, gate)
    first = json.loads(weft("run", wid, "--json")[1])["id"]
    second = json.loads(weft("run", wid, "--json")[1])["id"]
    with Client(stack.base_url, token=stack.token(tenant)) as client:
        _poll(lambda: client.list_approvals().count == 2)
    code, out, _ = weft("approvals", "list")
    assert code == 0 and f"{first}  check  " in out and "Ship it?" in out
    code, out, _ = weft("approvals", "list", "--json")
    assert [a["run_id"] for a in json.loads(out)["approvals"]] == [first, second]
    # Alice without the approver's address is not one of the step's approvers.
    code, _, err = weft("approvals", "approve", first, "--token", stack.token(tenant))
    assert code == 5 and "is not an approver" in err
    code, out, _ = weft("approvals", "approve", first, "-m", "looks good")
    assert code == 0 and "approved; the run continues" in out and "as approver@localhost" in out
    code, out, _ = weft("approvals", "reject", second, "--json")
    assert code == 0 and json.loads(out)["step_status"] == "failed"
    code, _, err = weft("approvals", "approve", second)
    assert code == 4 and "not awaiting approval" in err
    with Client(stack.base_url, token=stack.token(tenant)) as client:
        assert client.wait_run(wid, first, timeout_s=30).status == "completed"
        assert client.wait_run(wid, second, timeout_s=30).status == "failed"


def test_schedules_and_parse(weft, tmp_path):
    wid = _create(weft, tmp_path)
    code, out, _ = weft("schedules", "create", wid, "0 9 * * 1", "--timezone", "Europe/Paris", "--json")
    schedule = json.loads(out)
    assert code == 0 and schedule["timezone"] == "Europe/Paris" and schedule["enabled"] is True
    code, out, _ = weft("schedules", "list", wid)
    assert code == 0 and f"{schedule['id']}  0 9 * * 1  Europe/Paris  yes" in out
    code, out, _ = weft("schedules", "update", wid, schedule["id"], "--disable")
    assert code == 0 and "disabled" in out
    code, out, _ = weft("schedules", "occurrences", wid, schedule["id"], "--json")
    assert code == 0 and json.loads(out) == {"occurrences": []}
    code, _, err = weft("schedules", "create", wid, "not a cron")
    assert code == 2 and err.startswith("weft: ") and "[HTTP 400]" in err
    code, out, _ = weft("schedules", "delete", wid, schedule["id"])
    assert code == 0 and out == f"deleted schedule {schedule['id']}\n"
    code, out, _ = weft("parse", "Record that the nightly build passed", "--json")
    assert code == 0 and json.loads(out)["valid"] is True and json.loads(out)["steps"]
    code, out, _ = weft("parse", "Record that the nightly build passed")
    assert code == 0 and "confidence" in out and "STEP" in out


def test_dev_token_for_the_local_gateway(stack, tenant, weft, monkeypatch):
    monkeypatch.delenv("WEFT_TOKEN")
    monkeypatch.setenv("WEFT_TENANT", tenant)
    code, out, _ = weft("workflows", "list", "--json")
    assert (code, json.loads(out)["count"]) == (0, 0)


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_a_gateway_that_is_down_is_one_line_and_exit_7():
    done = _cli("workflows", "list", "--url", "http://127.0.0.1:9", "--token", "x")
    assert done.returncode == 7 and done.stdout == ""
    assert done.stderr.startswith("weft: ") and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "is the gateway running at http://127.0.0.1:9?" in done.stderr


def test_bash_completion_completes_commands_and_options(tmp_path):
    script = tmp_path / "weft.bash"
    script.write_text(_cli("completion", "bash").stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        done = subprocess.run(["bash", "-c", f"source {script}; COMP_WORDS=(weft {line}); "
                               f"COMP_CWORD={len(words)}; _weft; echo \"${{COMPREPLY[@]}}\""],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.split()

    assert complete("wor") == ["workflows"]
    assert complete("workflows", "") == ["list", "get", "create", "delete", "-h", "--help"]
    assert "--follow" in complete("run", "wf", "--f")
    assert complete("approvals", "re") == ["reject"]


def _poll(check, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
