"""The summary `make up` prints for each sink email shows the links a person acts on, from the real templates."""

from __future__ import annotations

from pathlib import Path

from deploy.local.mailbox import action_links, summary
from libs.adapters.mail import build_message
from libs.events.settings import load_settings
from services.notifier.approval_emails import _render

BASE = "http://127.0.0.1:8000"


def _eml(tmp_path: Path, subject: str, text: str) -> Path:
    message = build_message(load_settings({}), to=["dev@localhost"], subject=subject, text=text, html=None,
                            headers=None)
    path = tmp_path / "m.eml"
    path.write_bytes(message.as_bytes())
    return path


def test_a_plan_email_shows_its_approve_link_not_a_steps_destination(tmp_path: Path):
    text, _ = _render("plan_approval", requested_by="dev", name="Fetch", goal="g", plan_version=1, plan_hash="h",
                      steps=[{"id": "s", "action": "http.request", "description": "",
                              "destination": "http://169.254.169.254/latest"}],
                      destinations=["http://169.254.169.254/latest"], est_cost_usd=0.0,
                      approve_url=f"{BASE}/api/workflows/w1/approve?token=abc", expires_at="soon")
    shown = summary(_eml(tmp_path, 'Approve the plan for "Fetch" (version 1)', text))
    assert f"approve: {BASE}/api/workflows/w1/approve?token=abc" in shown
    assert "169.254" not in shown
    assert shown.splitlines()[0] == 'mail       to dev@localhost: Approve the plan for "Fetch" (version 1)'


def test_a_step_email_shows_both_approve_and_reject(tmp_path: Path):
    text, _ = _render("step_approval", kind="request", workflow_name="W", step_id="gate", title="Check",
                      description="", rows=[], total_rows=0, fields=[], required=1, approvers=1, deadline=None,
                      on_timeout="reject", require_comment=False, expires_at="soon",
                      approve_url=f"{BASE}/api/workflows/resume?token=t1&action=approve",
                      reject_url=f"{BASE}/api/workflows/resume?token=t1&action=reject")
    assert action_links(text) == [("approve", f"{BASE}/api/workflows/resume?token=t1&action=approve"),
                                  ("reject", f"{BASE}/api/workflows/resume?token=t1&action=reject")]


def test_a_folded_subject_has_no_leading_space(tmp_path: Path):
    path = tmp_path / "folded.eml"
    path.write_bytes(b"To: dev@localhost\nSubject:\n Approval needed: Check (W)\n\nbody\n")
    assert summary(path).splitlines()[0] == "mail       to dev@localhost: Approval needed: Check (W)"
