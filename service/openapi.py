"""Builds schemas/openapi.yaml (OpenAPI 3.1) from the JSON Schemas in schemas/cds-hooks/.

The JSON Schemas are the single source of truth; the OpenAPI document embeds them as components, so the two
cannot drift (a test regenerates it and compares). Regenerate with:  python -m service.openapi > schemas/openapi.yaml
"""
from __future__ import annotations

import copy
import json
import sys

import yaml

from .validation import SCHEMA_DIR

SCHEMAS = {
    "Request": "request", "PatientViewContext": "context-patient-view", "OrderSelectContext": "context-order-select",
    "OrderSignContext": "context-order-sign", "Response": "response", "Feedback": "feedback",
    "Discovery": "discovery",
}


def _component(name: str, schema: dict, out: dict) -> None:
    """Hoist $defs to components (Name_Def) and rewrite local refs so they resolve inside the document."""
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", {})
    for key in ("$schema", "$id"):
        schema.pop(key, None)

    def fix(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = f"#/components/schemas/{name}_{ref[len('#/$defs/'):]}"
            for v in node.values():
                fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)

    fix(schema)
    out[name] = schema
    for def_name, def_schema in defs.items():
        fix(def_schema)
        out[f"{name}_{def_name}"] = def_schema


def _oo_response(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}


def build() -> dict:
    components: dict = {}
    for name, file in SCHEMAS.items():
        _component(name, json.loads((SCHEMA_DIR / f"{file}.schema.json").read_text()), components)
    # The envelope plus the context schema of the hook it names (what the service validates, in that order).
    components["InvokeRequest"] = {"allOf": [{"$ref": "#/components/schemas/Request"}, {"oneOf": [
        {"properties": {"hook": {"const": hook}, "context": {"$ref": f"#/components/schemas/{ctx}"}}}
        for hook, ctx in (("patient-view", "PatientViewContext"), ("order-select", "OrderSelectContext"),
                          ("order-sign", "OrderSignContext"))]}]}
    components["OperationOutcome"] = {
        "type": "object", "required": ["resourceType", "issue"],
        "properties": {"resourceType": {"const": "OperationOutcome"},
                       "issue": {"type": "array", "minItems": 1, "items": {
                           "type": "object", "required": ["severity", "code"],
                           "properties": {"severity": {"enum": ["fatal", "error", "warning", "information"]},
                                          "code": {"type": "string"}, "diagnostics": {"type": "string"},
                                          "expression": {"type": "array", "items": {"type": "string"}}}}}}}
    components["RuleSourceAttributes"] = {
        "type": "object", "required": ["id", "version", "status", "bibliography", "developer"],
        "properties": {"id": {"type": "string"}, "version": {"type": "string"}, "status": {"type": "string"},
                       "title": {"type": "string"}, "hooks": {"type": "array", "items": {"type": "string"}},
                       "bibliography": {"type": "array", "items": {"type": "object"}},
                       "developer": {"type": "string"}, "funding": {"type": "string"},
                       "intended_use": {"type": "string"}, "population": {"type": "string"},
                       "exclusions": {"type": "array", "items": {"type": "string"}}}}
    components["FeedbackResult"] = {
        "type": "object", "required": ["recorded", "duplicates"],
        "properties": {"recorded": {"type": "integer", "minimum": 0},
                       "duplicates": {"type": "integer", "minimum": 0}}}
    errors = {"400": _oo_response("Malformed JSON, missing or ill-typed members, hook not served, invalid FHIR"),
              "401": _oo_response("Missing or invalid JWT (no detail is given)"),
              "403": _oo_response("No trusted issuers are configured and the caller is not on this machine"),
              "404": _oo_response("Unknown service id"),
              "413": _oo_response("Request body too large"),
              "415": _oo_response("Content-Type is not JSON")}
    service_id = {"name": "service_id", "in": "path", "required": True,
                  "schema": {"type": "string", "enum": ["pacing-review", "sedating-medication-safety"]}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "pacecds CDS Hooks service", "version": "2.0",
                 "description": "CDS Hooks 2.0 service: activity pacing and energy-draining comorbidities "
                                "(patient-view) and sedating medication safety (order-select, order-sign). "
                                "When trusted issuers are configured, every call needs a JWT bearer token whose "
                                "aud is the URL called (CDS Hooks §Trusting CDS Clients). Non-2xx bodies are FHIR "
                                "OperationOutcome resources."},
        "servers": [{"url": "/"}],
        "security": [{"cdsClientJwt": []}, {}],
        "paths": {
            "/cds-services": {"get": {
                "operationId": "discovery", "summary": "Discovery: the services, hooks and prefetch templates",
                "responses": {"200": {"description": "Services",
                                      "content": {"application/json": {
                                          "schema": {"$ref": "#/components/schemas/Discovery"}}}},
                              "401": errors["401"], "403": errors["403"]}}},
            "/cds-services/{service_id}": {"post": {
                "operationId": "invoke", "summary": "Call a service for one hook firing",
                "parameters": [service_id],
                "description": "pacing-review serves patient-view; sedating-medication-safety serves order-select "
                               "and order-sign. A hook the service does not serve is a 400.",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/InvokeRequest"}}}},
                "responses": {"200": {"description": "Cards (an empty list when nothing applies)",
                                      "content": {"application/json": {
                                          "schema": {"$ref": "#/components/schemas/Response"}}}},
                              "412": _oo_response("Required data is neither prefetched nor obtainable from "
                                                  "fhirServer"),
                              **errors}}},
            "/cds-services/{service_id}/feedback": {"post": {
                "operationId": "feedback", "summary": "Feedback on cards: accepted or overridden",
                "parameters": [service_id],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Feedback"}}}},
                "responses": {"200": {"description": "Stored (idempotent: repeats count as duplicates)",
                                      "content": {"application/json": {
                                          "schema": {"$ref": "#/components/schemas/FeedbackResult"}}}},
                              "503": _oo_response("The audit store is disabled"),
                              **errors}}},
            "/rules": {"get": {
                "operationId": "rules", "summary": "Source attributes (ONC HTI-1) of every rule in the serving ruleset",
                "security": [{}],
                "responses": {"200": {"description": "The ruleset and its rules",
                                      "content": {"application/json": {"schema": {
                                          "type": "object", "required": ["ruleset", "rules"],
                                          "properties": {"ruleset": {"type": "object"},
                                                         "rules": {"type": "array",
                                                                   "items": {"$ref": "#/components/schemas/RuleSourceAttributes"}}}}}}},
                              "403": errors["403"]}}},
            "/rules/{rule_id}": {"get": {
                "operationId": "rule", "summary": "Source attributes of one rule",
                "security": [{}],
                "parameters": [{"name": "rule_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The rule",
                                      "content": {"application/json": {"schema": {
                                          "$ref": "#/components/schemas/RuleSourceAttributes"}}}},
                              "403": errors["403"],
                              "404": _oo_response("No such rule in the serving ruleset")}}},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"cdsClientJwt": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "Signed by a trusted issuer (ES384/RS384); aud = the URL called; "
                               "exp/iat/jti required; each jti is accepted once."}},
        },
    }


def render() -> str:
    header = ("# Generated by `python -m service.openapi` from schemas/cds-hooks/*.schema.json; do not edit by hand.\n")
    return header + yaml.safe_dump(build(), sort_keys=False, width=110, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(render())
