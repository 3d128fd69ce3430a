"""`salesforce.query`: a SOQL query over the Salesforce REST API, as the run's user's connected org."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from services.executor.integrations.connected import bearer, tokens_for
from services.executor.integrations.support import check_status, decode_body, require_str, send
from services.executor.steps import StepCall, StepDeps, StepError, config_of, step

API_VERSION = "v60.0"


@step("salesforce.query")
async def salesforce_query(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """{"totalSize", "records"} of config.query (SOQL); each record without Salesforce's `attributes`."""
    soql = require_str(config_of(node, context), "query", "salesforce.query")
    tokens = await tokens_for(deps, call, "salesforce", "salesforce.query")
    base = deps.settings.salesforce_api_base_url or tokens.instance_url
    if not base:
        raise StepError("salesforce.query: the connection names no instance_url; set WEFT_SALESFORCE_API_BASE_URL")
    url = f"{base.rstrip('/')}/services/data/{API_VERSION}/query?{urlencode({'q': soql})}"
    response = await send(deps, call, "GET", url, what="salesforce.query", headers=bearer(tokens))
    check_status(response, "salesforce.query")
    found = decode_body(response)
    if not isinstance(found, dict):
        raise StepError("salesforce.query: Salesforce answered something other than JSON")
    records = [{k: v for k, v in r.items() if k != "attributes"} for r in found.get("records") or []
               if isinstance(r, dict)]
    return {"totalSize": found.get("totalSize", len(records)), "records": records}
