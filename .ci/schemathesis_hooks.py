"""Schemathesis checks and hooks of our own, loaded through SCHEMATHESIS_HOOKS by
.ci/schemathesis.sh.

- error_body_shape: every error answer of the gateway's HTTP API has one shape,
  {"error": {"code", "message"}} (plus "field" on validation errors), whatever refused the
  request: a handler, the auth door, actix's extractors, or the router's fallback. The
  schema checks cannot say this for statuses the document does not list, so this check
  says it for every 4xx and 5xx.
- no_gateway_fault: any 5xx fails, except a 502/503/504 whose code says the upstream is
  at fault (not connected, circuit open, timed out, errored). Those are the gateway
  reporting, as documented, on an upstream: the fuzzer registers servers at URLs where
  nothing listens and calls their tools, and must get exactly that answer.
- protect_fixtures (before_call): schemathesis learns names from answers (GET /keys lists
  the run's own admin key) and feeds them to DELETE; a run that revokes its own key
  tests nothing after that. Destructive calls on the fixtures the script made go to a
  name that does not exist instead.
"""

import os
import re

import schemathesis

CODE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

UPSTREAM_FAULTS = {
    502: {"upstream-error", "upstream-unreachable", "upstream-result-too-large"},
    503: {"upstream-unavailable", "circuit-open", "upstream-gone"},
    504: {"upstream-timeout"},
}

# (method, path template) -> the fixture name its `name` parameter must not take.
PROTECTED = {
    ("DELETE", "/api/v1/keys/{name}"): os.environ.get("OMNI_CI_KEY_NAME"),
    ("DELETE", "/api/v1/servers/{name}"): os.environ.get("OMNI_CI_SERVER_NAME"),
    ("PUT", "/api/v1/servers/{name}"): os.environ.get("OMNI_CI_SERVER_NAME"),
}


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    fixture = PROTECTED.get((case.operation.method.upper(), case.operation.path))
    params = case.path_parameters
    if fixture and params and params.get("name") == fixture:
        params["name"] = "not-" + fixture


@schemathesis.check
def no_gateway_fault(ctx, response, case):
    if response.status_code < 500:
        return None
    code = None
    try:
        code = response.json()["error"]["code"]
    except Exception:
        pass
    if code in UPSTREAM_FAULTS.get(response.status_code, ()):
        return None
    raise AssertionError(
        f"server error {response.status_code} ({code}): {response.text[:200]!r}"
    )


@schemathesis.check
def error_body_shape(ctx, response, case):
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except Exception as exc:  # not JSON at all
        raise AssertionError(
            f"{response.status_code} answer is not JSON ({exc}): {response.text[:200]!r}"
        )
    if not isinstance(body, dict) or set(body) != {"error"}:
        raise AssertionError(f"error body is not {{\"error\": {{...}}}}: {body!r}"[:400])
    error = body["error"]
    if not isinstance(error, dict):
        raise AssertionError(f"\"error\" is not an object: {body!r}"[:400])
    extra = set(error) - {"code", "message", "field"}
    if extra:
        raise AssertionError(f"unexpected members {sorted(extra)} in {body!r}"[:400])
    for member in ("code", "message"):
        if not isinstance(error.get(member), str) or not error[member]:
            raise AssertionError(f"\"error.{member}\" is not a non-empty string: {body!r}"[:400])
    if not CODE.match(error["code"]):
        raise AssertionError(f"\"error.code\" is not kebab-case: {error['code']!r}")
    if "field" in error and not isinstance(error["field"], str):
        raise AssertionError(f"\"error.field\" is not a string: {body!r}"[:400])
    return None
