"""Settings read once from WEFT_* environment variables into a frozen struct."""

from __future__ import annotations

import os
from typing import Any

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = "postgresql://postgres@127.0.0.1:5432/weft"
    # Services run their queries as this role: it owns no table, so row-level security applies to it.
    db_app_role: str = "weft_app"
    nats_url: str = "nats://127.0.0.1:4222"  # or every node of a cluster, comma-separated
    nats_stream_replicas: int = 1  # 3 on a 3-node cluster: any one node may be lost (docs/operations.md)
    service: str = "weft"
    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: str = "weft-dev-secret-change-me-0123456789abcdef"
    jwt_issuer: str = "weft-local"
    jwt_audience: str = "weft-api"
    jwt_tenant_claim: str = "customer_id"
    command_timeout_s: float = 5.0
    max_body_bytes: int = 1_048_576
    max_deliver: int = 5
    command_workers: int = 4  # commands a planner handles at once
    ack_wait_s: float = 30.0
    nak_delay_s: float = 0.5
    events_duplicate_window_s: float = 120.0
    relay_poll_s: float = 0.5
    # The relay publishes a logged command again when its outcome is not recorded this long after it was
    # accepted (then backing off to 30 s): the slow path that runs commands accepted while NATS was down. As
    # long as the gateway waits (command_timeout_s): sooner, a saturated executor's queue would be published
    # twice over (JetStream drops the copies, but each costs a publish and an UPDATE).
    command_republish_s: float = 5.0
    # nats-server's JetStream sync_interval for the embedded server ("always", or a duration like "2m"):
    # how often it fsyncs its store. Not a correctness condition (DESIGN section 3, docs/decisions/0031).
    nats_sync_interval: str = "2m"
    # Scheduler (docs/decisions/0007): the longest it sleeps without a due time or a NOTIFY; how late an
    # occurrence may be handled and still count as on time (later = missed, the schedule's policy applies).
    scheduler_poll_s: float = 30.0
    # Executor replicas (docs/decisions/0110): a run's driver holds a lease this long, renewed every third of
    # it; a dead replica's runs are taken over within about lease + a third of it.
    executor_lease_s: float = 10.0
    # The lease owner's name; empty = host-pid-random. Only ever the name of one live process (deploy/k8s
    # sets the pod name): a restarted container then takes its own leases back at once.
    executor_id: str = ""
    scheduler_misfire_grace_s: float = 60.0
    log_level: str = "info"
    # Planner: an OpenAI-compatible endpoint; empty base URL = the offline planner.
    llm_base_url: str = ""
    llm_api_key: str = ""
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = 30.0
    plan_cache_ttl_s: float = 3600.0
    # How long the gateway waits for a planning command (it includes the model's time) before 202.
    planning_timeout_s: float = 90.0
    # Outbound HTTP (http.request, slack, agent endpoints, webhooks): public addresses only, except these
    # comma-separated entries (`host` = its default ports 80 and 443, `host:port`, `host:*` = any port);
    # bounded time and size; never follows redirects. An allow-list entry never opens a platform port:
    # this service's port, the database's and NATS's, and platform_ports (docs/decisions/0054).
    outbound_allow_hosts: str = ""
    platform_ports: str = ""
    outbound_timeout_s: float = 10.0
    outbound_max_bytes: int = 1_048_576
    # email.send: SMTP when smtp_host is set, else messages are written to mail_sink_dir (embedded default).
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = "weft@localhost"
    smtp_starttls: bool = False
    mail_sink_dir: str = ".weft/mail"
    # Approvals (docs/decisions/0009): links in emails are JWTs signed with their own key (never the user
    # JWT secret), pointing at public_base_url (the gateway as users reach it). approval_email receives plan
    # approvals when the requester's token has no `email` claim, and step approvals without `approvers`.
    public_base_url: str = "http://127.0.0.1:8000"
    approval_signing_key: str = "weft-dev-approval-key-change-me-fedcba9876543210"
    approval_email: str = "approver@localhost"
    plan_approval_ttl_s: int = 86400
    step_approval_ttl_s: int = 7200
    # true: links open a confirmation page whose button POSTs the decision (for mail scanners that follow links).
    approval_links_confirm: bool = False
    approval_bot_user_agents: str = ""  # extra comma-separated user-agent fragments treated as link scanners
    slack_webhook_url: str = ""
    # Webhooks (spec D): per-attempt timeout; retry delays after failed attempts 1..3 (each stretched by up
    # to +-jitter of itself); how long an unrecorded in-process first attempt waits before its durable timer
    # retries it (must exceed the timeout); dead-lettered deliveries in a row that disable an endpoint.
    webhook_timeout_s: float = 10.0
    webhook_retry_delays_s: str = "1,5,15"
    webhook_retry_jitter: float = 0.2
    webhook_lease_s: float = 30.0
    webhook_disable_after: int = 5
    webhook_workers: int = 16  # deliveries the notifier sends at once
    # Live streams: heartbeat interval of SSE/WebSocket connections.
    stream_heartbeat_s: float = 30.0
    # Connected accounts (docs/decisions/0072): OAuth tokens are sealed at rest like every secret (secrets_keys).
    # OAuth providers: configuration, with the real endpoints as defaults (tests point them at local fakes).
    google_client_id: str = ""
    google_client_secret: str = ""
    google_authorize_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    google_revoke_url: str = "https://oauth2.googleapis.com/revoke"
    google_userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    google_api_base_url: str = "https://gmail.googleapis.com"  # Gmail REST API
    google_docs_base_url: str = "https://docs.googleapis.com"  # Docs REST API
    google_scopes: str = ("openid email https://www.googleapis.com/auth/gmail.modify"
                          " https://www.googleapis.com/auth/gmail.send https://www.googleapis.com/auth/documents")
    salesforce_client_id: str = ""
    salesforce_client_secret: str = ""
    salesforce_authorize_url: str = "https://login.salesforce.com/services/oauth2/authorize"
    salesforce_token_url: str = "https://login.salesforce.com/services/oauth2/token"
    salesforce_revoke_url: str = "https://login.salesforce.com/services/oauth2/revoke"
    salesforce_userinfo_url: str = "https://login.salesforce.com/services/oauth2/userinfo"
    salesforce_api_base_url: str = ""  # empty: the instance_url the token response names
    salesforce_scopes: str = "api refresh_token openid email"
    # v2 API rate limit per user (spec E: 100 requests per minute), a token bucket shared by every gateway
    # process (docs/decisions/0008); 0 turns it off. API keys carry their own limits (weft api-key).
    v2_rate_limit_per_minute: int = 100
    # Failed authentications (401: unknown API keys, bad JWTs) per client address per minute, burst the same,
    # shared by every gateway; 0 = off (docs/decisions/0008, 0054).
    auth_failures_per_minute: int = 30
    # Telemetry (docs/decisions/0040): /metrics on every service's port unless metrics_enabled is false; traces
    # are exported over OTLP/HTTP to otel_endpoint (e.g. http://collector:4318) only when it is set, keeping
    # trace_sample_ratio of new traces (a caller's sampling decision is followed).
    metrics_enabled: bool = True
    otel_endpoint: str = ""
    trace_sample_ratio: float = 1.0
    # Public API callers without a valid key: a bucket per client address, refilled at this rate, burst a
    # tenth of a minute's worth (10 at the default, D's key default); their 401s carry the headers too.
    public_anonymous_rate_per_minute: int = 60
    # Secrets at rest (agent auth secrets; libs/security/secrets.py): `id:base64(32 bytes)` pairs, and the id
    # new secrets use (default the first). The dev key below is public: production sets its own.
    secrets_keys: str = "dev:d2VmdC1kZXYtc2VjcmV0cy1rZXktY2hhbmdlLW1lISE="
    secrets_key_id: str = ""


def _coerce(field_type: Any, raw: str) -> Any:
    if field_type is int:
        return int(raw)
    if field_type is float:
        return float(raw)
    if field_type is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return raw


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from WEFT_<FIELD> variables; keyword overrides win (tests use them)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(Settings):
        raw = env.get(f"WEFT_{field.name.upper()}")
        if raw is not None:
            try:
                values[field.name] = _coerce(field.type, raw)
            except ValueError as exc:
                raise ValueError(f"WEFT_{field.name.upper()}: {exc}") from exc
    values.update(overrides)
    return Settings(**values)
