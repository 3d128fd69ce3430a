"""The dashboard's pure pieces: the signed session, one-time sign-in tokens kept apart from API tokens, the
plan graph's layout, and refusals mapped onto form fields."""

from __future__ import annotations

import time

import pytest

from libs.events.settings import load_settings
from libs.security.auth import InvalidToken, Principal, issue_token, verify_token
from libs.security.signin_tokens import InvalidSignin, issue_signin_token, verify_signin_token
from services.gateway.core.errors import ApiError
from services.gateway.dashboard import forms, signin, svg
from services.gateway.dashboard import session as sessions

SETTINGS = load_settings({})


def _session(**changes) -> sessions.Session:
    values = dict(tenant_id="acme", user_id="ann", email="ann@example.com", csrf="c" * 20,
                  expires=int(time.time()) + 60) | changes
    return sessions.Session(**values)


def test_a_session_round_trips_and_any_change_to_it_is_refused():
    value = sessions.encode(SETTINGS, _session())
    assert sessions.decode(SETTINGS, value) == _session(expires=sessions.decode(SETTINGS, value).expires)
    body, sig = value.split(".")
    forged = sessions.encode(SETTINGS, _session(tenant_id="evil")).split(".")[0]
    assert sessions.decode(SETTINGS, f"{forged}.{sig}") is None  # another tenant with the old signature
    assert sessions.decode(SETTINGS, f"{body}.{sig[:-2]}AA") is None
    assert sessions.decode(load_settings({}, jwt_secret="another-secret-of-enough-length-1234"), value) is None
    assert sessions.decode(SETTINGS, sessions.encode(SETTINGS, _session(expires=int(time.time()) - 1))) is None
    for junk in ("", "a.b.c", "!!!.???", "x" * 5000):
        assert sessions.decode(SETTINGS, junk) is None


def test_the_session_cookie_is_httponly_samesite_lax_and_scoped_to_the_dashboard():
    cookie = sessions.session_cookie(SETTINGS, Principal("acme", "ann"))
    assert cookie.httponly and cookie.samesite == "lax" and cookie.path == "/dashboard" and not cookie.secure
    https = load_settings({}, public_base_url="https://weft.example.com")
    assert sessions.session_cookie(https, Principal("acme", "ann")).secure


def test_sign_in_links_and_api_tokens_are_not_interchangeable():
    link = issue_signin_token(SETTINGS, "acme", "dev", email="dev@example.com")
    principal, token_id = verify_signin_token(SETTINGS, link)
    assert principal == Principal("acme", "dev", "dev@example.com") and token_id
    with pytest.raises(InvalidToken):
        verify_token(SETTINGS, link)  # a sign-in link is no API bearer token
    with pytest.raises(InvalidSignin):
        verify_signin_token(SETTINGS, issue_token(SETTINGS, "acme", "dev"))
    with pytest.raises(InvalidSignin, match="expired"):
        verify_signin_token(SETTINGS, issue_signin_token(SETTINGS, "acme", "dev", ttl_s=-1))


def test_the_plan_graph_puts_each_step_after_what_it_depends_on():
    nodes = [{"id": "a", "type": "transform"}, {"id": "b", "type": "echo", "input_from": "a"},
             {"id": "c", "type": "echo", "depends_on": ["a"]}, {"id": "d", "type": "echo", "depends_on": ["b", "c"]}]
    assert svg._levels(nodes) == {"a": 0, "b": 1, "c": 1, "d": 2}
    drawn = svg.plan_graph({"nodes": nodes}, {"a": "completed"})
    assert drawn.count("<line") == 4 and "transform · completed" in drawn and "<title" in drawn
    assert "<script" not in svg.plan_graph({"nodes": [{"id": "<script>", "type": "x"}]})


def test_the_plan_graph_of_the_longest_chain_declared_backwards_is_drawn():
    """Columns are found with a loop, not recursion: MAX_NODES steps, last first, must not be a RecursionError."""
    from libs.domain.definition import MAX_NODES

    chain = [{"id": "s0", "type": "noop"}] + [{"id": f"s{i}", "type": "noop", "input_from": f"s{i - 1}"}
                                              for i in range(1, MAX_NODES)]
    assert svg._levels(chain[::-1]) == {f"s{i}": i for i in range(MAX_NODES)}
    assert svg.plan_graph({"nodes": chain[::-1]}).count("<rect") >= MAX_NODES
    cycle = [{"id": "a", "type": "noop", "input_from": "b"}, {"id": "b", "type": "noop", "input_from": "a"}]
    assert svg._levels(cycle) == {"b": 1, "a": 2}


def test_a_refusal_lands_next_to_the_field_it_names():
    assert forms.errors_of(ApiError(400, "bad", "definition.nodes[0].id"), ("name", "definition"), "name") == {
        "definition": "bad"}
    assert forms.errors_of(ApiError(400, "bad", "rate_limit.burst"), ("name",), "name") == {"name": "bad"}
    assert forms.status_of(ApiError(500, "x")) == 400 and forms.status_of(ApiError(409, "x")) == 409


@pytest.mark.parametrize("raw", ["https://evil.example", "//evil.example", "/dashboard//evil.example", "/api/v2/x",
                                 "/dashboard\\evil", ""])
def test_after_sign_in_only_a_dashboard_path_is_followed(raw):
    assert signin._next(raw) == "/dashboard/workflows"
    assert signin._next("/dashboard/runs?status=failed") == "/dashboard/runs?status=failed"
