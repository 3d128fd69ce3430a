"""Create and update through the v2 API (real gateway, planner, executor and relay processes) refuse a
definition the step catalogue does not describe, with a 400 naming the node and the field, and accept the
spec's own example."""

from __future__ import annotations

import uuid

from tests.conftest import poll

SEND = {"id": "send", "type": "integration", "action": "email.send", "config": {"to": "a@example.com", "subject": "Hi"}}
E_CREATE_EXAMPLE = {  # ../shared/spec/E-workflows-api-v2.md, POST /api/v2/workflows
    "nodes": [
        {"id": "step_1", "type": "condition", "action": "check_status",
         "config": {"field": "$.deployment.status", "operator": "equals", "value": "success"}},
        {"id": "step_2", "type": "integration", "action": "slack.post_message", "input_from": "step_1",
         "config": {"channel": "#deployments", "message": "Deployment completed successfully!"}},
    ],
    "inputs": {}, "outputs": {},
}


def _name() -> str:
    return f"wf-{uuid.uuid4().hex[:8]}"


async def test_an_unknown_type_or_action_is_refused_at_create_naming_the_node(stack, tenant):
    async with stack.client(tenant) as c:
        bad_action = {"nodes": [{"id": "a", "type": "echo"}, {"id": "b", "type": "echo"},
                                {**SEND, "action": "email.sned"}]}
        r = await c.post("/api/v2/workflows", json={"name": _name(), "definition": bad_action})
        assert r.status_code == 400, r.text
        assert r.json() == {"success": False, "field": "definition.nodes[2].action",
                            "error": 'definition.nodes[2] (id "send"): unknown action "email.sned"'}
        r = await c.post("/api/v2/workflows", json={"name": _name(), "definition": {"nodes": [{"id": "x", "type": "nope"}]}})
        assert r.status_code == 400 and r.json()["field"] == "definition.nodes[0].type"
        r = await c.post("/api/v2/workflows", json={"name": _name(), "definition": {"nodes": [
            {"id": "w", "type": "delay", "config": {"seconds": "soon"}}]}})
        assert r.status_code == 400 and r.json()["field"] == "definition.nodes[0].config.seconds"
        r = await c.post("/api/v2/workflows", json={"name": _name(), "definition": {"nodes": [
            {"id": "e", "type": "echo", "config": {"message": "a\u0000b"}}]}})
        assert r.status_code == 400 and r.json()["field"] == "definition.nodes[0].config.message"
        assert (await c.get("/api/v2/workflows")).json()["count"] == 0  # nothing was created


async def test_an_update_to_an_invalid_definition_is_refused_and_changes_nothing(stack, tenant):
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows", json={"name": _name(), "definition": E_CREATE_EXAMPLE})
        assert r.status_code == 201, r.text
        created = r.json()["workflow"]
        assert created["status"] == "active" and created["definition"] == E_CREATE_EXAMPLE
        wid = created["id"]
        broken = {"nodes": [{**SEND, "config": {"to": "a@example.com"}}]}
        r = await c.patch(f"/api/v2/workflows/{wid}", json={"definition": broken})
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "definition.nodes[0].config.subject" and "(id \"send\")" in r.json()["error"]
        got = await poll(lambda: c.get(f"/api/v2/workflows/{wid}"), lambda r: r.status_code == 200)
        assert got.json()["workflow"]["definition"] == E_CREATE_EXAMPLE
