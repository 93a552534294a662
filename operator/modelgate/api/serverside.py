"""What the API server enforces of the models' rules, and what it cannot.

Field constraints (types, enums, patterns, bounds, lengths, required fields)
become the CRDs' schema (api/crdgen.py), so the API server and the models
hold them alike by construction. Every validator of the models is mirrored
on the server by CEL rules (``x-kubernetes-validations``) or list types
(``x-kubernetes-list-type`` map or set) beside it, so a GitOps agent that
applies without the admission webhook cannot store what the operator would
refuse. These are the exceptions: only the admission webhook and the
operator, which run the models, enforce them, and each says why.
tests/realcluster/test_validation_parity_on_apiserver.py proves every
validator against pydantic, the real API server and the webhook, and fails
for a validator that is neither mirrored nor listed here.

Rules that read other objects (a gate's task for a release's inline checks
against a named gate, environments named by a release, ``promotesFrom``
paths) are not validators of one object: the operator reports them as
conditions and the webhook warns, because objects applied together arrive in
any order.
"""

from __future__ import annotations

# Validator (Class.method) -> why the API server cannot enforce it.
WEBHOOK_ONLY: dict[str, str] = {
    "ConfigRule._pattern_compiles": (
        "the rule runs in Python's re, whose regex language is not the API server's (RE2: "
        "no lookaround or backreferences, other escapes); CEL has no function that tells "
        "whether a string is a valid Python regex"
    ),
    "ConfigRule._forbid_regexes_compile": (
        "a /regex/ entry runs in Python's re, whose regex language is not the API server's "
        "(RE2); CEL has no function that tells whether a string is a valid Python regex"
    ),
}
