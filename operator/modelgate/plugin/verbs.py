"""What the plugin's verbs write. Pure: each builds the change to a spec
(never a status) that the operator acts on, or refuses naming the fix.

- ``approve RELEASE --environment ENV [--config-hash H] [--comment C]``
  appends to ``spec.promotion.approvals`` an entry with ``environment``,
  ``approvedBy`` (the caller, as the API server knows them), ``approvedAt``
  and, if given, ``configHash`` and ``comment``. It is a JSON merge patch of
  the whole list carrying the release's ``resourceVersion``: a concurrent
  edit makes it fail (409) rather than lose either. GitOps users write the
  same entry through Git.
- ``retry RELEASE [--reason R]`` sets ``spec.retry`` to ``requestedAt`` (now,
  to the microsecond: a new value is a new request), ``requestedBy`` (the
  caller) and ``reason``. The operator runs the failed step (training or
  import, scoring, the gate's evaluation) again as a new Job, once per
  ``requestedAt``, and records it in ``status.retry``. Also with the
  release's ``resourceVersion``.
- ``abort RELEASE [--reason R]`` sets ``spec.abort`` (``requestedAt``,
  ``requestedBy``, ``reason``): the release is promoted no further and a
  challenger it has beside a live release is removed; ``retry`` removes it
  (``spec.abort: null``) and the release goes on from where it stopped.
- ``rollback RELEASE --environment ENV [--reason R]`` sets the environment's
  entry of ``spec.promotion.rollbacks`` (one per environment) to
  ``environment``, ``requestedAt``, ``requestedBy`` and ``reason``. Where the
  release is live, the operator puts back what it replaced there; where it is
  judged beside the live one, it removes it; once per ``requestedAt``, final
  for the release there (``status.environments[].rolledBackBy``).
- ``promote RELEASE --environment ENV [--reason R]`` sets the environment's
  entry of ``spec.promotion.promotions``: the release goes into ENV without
  waiting for the soak after the previous environment or for the rest of a
  judgement beside the live release (once its challenger is verified, it
  takes over). Approvals, freeze windows, config rules and verification
  still hold. It stands until the release is live there.
- ``reverify RELEASE --environment ENV [--reason R]`` sets the environment's
  entry of ``spec.promotion.reverifications`` likewise: where the release is
  live and verified, its verification runs again as a new Job; a failure is
  handled as the first one's (rolled back with autoRollback).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

HASH = re.compile(r"^[a-f0-9]{12,64}$")


class Refused(ValueError):
    """The change cannot be made as asked; the message names the fix."""


def _request(who: str, now: datetime, reason: str | None) -> dict[str, Any]:
    """A request's fields as the plugin writes them: the time to the
    microsecond (a new value is a new request), the caller and why (null
    when not given: in a merge patch that removes an earlier reason)."""
    return {
        "requestedAt": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "requestedBy": who,
        "reason": reason or None,
    }


def _on_path(release: dict[str, Any], environment: str) -> str:
    """The release's namespaced name; refused when ``environment`` is not on
    its promotion path."""
    meta = release.get("metadata") or {}
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    promotion = (release.get("spec") or {}).get("promotion") or {}
    path = list(promotion.get("environments") or [])
    if environment not in path:
        raise Refused(
            f"environment {environment!r} is not on the promotion path of ModelRelease {name} "
            f"({', '.join(path) or 'none'}): pass --environment with one of them"
        )
    return name


def approval_patch(
    release: dict[str, Any],
    environment: str,
    who: str,
    now: datetime,
    config_hash: str | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    """The merge patch that records ``who`` approving ``release`` into
    ``environment``."""
    meta = release.get("metadata") or {}
    name = _on_path(release, environment)
    promotion = (release.get("spec") or {}).get("promotion") or {}
    if config_hash is not None and not HASH.match(config_hash):
        raise Refused(
            f"--config-hash {config_hash!r} is not a config hash: give 12 to 64 lowercase hex "
            "digits, as `kubectl modelgate get release` shows the environment's config"
        )
    approvals = list(promotion.get("approvals") or [])
    for existing in approvals:
        same_config = existing.get("configHash") == config_hash or (
            config_hash is not None
            and str(existing.get("configHash") or "").startswith(config_hash)
        )
        if existing.get("environment") == environment and same_config:
            raise Refused(
                f"ModelRelease {name} already has an approval for {environment}"
                + (f" and config {config_hash}" if config_hash else "")
                + f" (by {existing.get('approvedBy') or 'unknown'}); nothing to do"
            )
    entry: dict[str, Any] = {
        "environment": environment,
        "approvedBy": who,
        "approvedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if config_hash is not None:
        entry["configHash"] = config_hash
    if comment:
        entry["comment"] = comment
    return {
        "metadata": {"resourceVersion": meta.get("resourceVersion")},
        "spec": {"promotion": {"approvals": [*approvals, entry]}},
    }


# The conditions whose False a retry answers, and the step it runs again.
RETRYABLE = {"Trained": "training (or scoring)", "GatePassed": "the gate's evaluation"}


def retry_patch(
    release: dict[str, Any], who: str, now: datetime, reason: str | None = None
) -> dict[str, Any]:
    """The merge patch that asks the operator to run ``release``'s failed
    step again, or to go on with an aborted release (spec.abort removed);
    refused when nothing failed or a retry is still pending."""
    meta = release.get("metadata") or {}
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    if (release.get("spec") or {}).get("abort"):
        return {
            "metadata": {"resourceVersion": meta.get("resourceVersion")},
            "spec": {"abort": None},
        }
    status = release.get("status") or {}
    asked = ((release.get("spec") or {}).get("retry") or {}).get("requestedAt")
    handled = (status.get("retry") or {}).get("handled")
    if asked and asked != handled:
        raise Refused(
            f"ModelRelease {name} has a retry asked at {asked} that the operator has not acted "
            "on yet: wait for status.retry, or see the operator's logs if it does not come"
        )
    failed = [
        c
        for c in status.get("conditions") or []
        if c.get("type") in RETRYABLE and c.get("status") == "False"
    ]
    if not failed:
        raise Refused(
            f"nothing failed to retry in ModelRelease {name} (phase "
            f"{status.get('phase') or 'Pending'}): retry runs a failed training, scoring or gate "
            "evaluation again"
        )
    request = _request(who, now, reason)
    return {
        "metadata": {"resourceVersion": meta.get("resourceVersion")},
        "spec": {"retry": request},
    }


def retried_step(release: dict[str, Any]) -> str:
    """What the retry of ``release`` (as read before it) runs again, for the
    plugin's answer."""
    if (release.get("spec") or {}).get("abort"):
        return "the aborted release from where it stopped"
    conditions = (release.get("status") or {}).get("conditions") or []
    failed = [
        c["type"] for c in conditions if c.get("type") in RETRYABLE and c.get("status") == "False"
    ]
    return RETRYABLE[failed[0]] if failed else "nothing"


# Where a release is in an environment (or beside the live one) to be rolled back.
ROLLABLE = {"Deploying", "Verifying", "Analyzing", "Deployed", "Judging"}
# Where its verification may run again.
VERIFIED = {"Deployed", "Analyzing"}


def rollback_patch(
    release: dict[str, Any],
    environment: str,
    who: str,
    now: datetime,
    reason: str | None = None,
) -> dict[str, Any]:
    """The merge patch that asks the operator to take ``release`` out of
    ``environment``; refused where it is not live or a request is pending."""
    name, entry = _environment_entry(release, environment, "rollbacks", "rollbackRequest")
    phase = entry.get("phase") or "Pending"
    if phase == "RolledBack":
        raise Refused(
            f"ModelRelease {name} is already rolled back in {environment} "
            f"({entry.get('message') or 'no message'}); nothing to do"
        )
    if phase not in ROLLABLE:
        raise Refused(
            f"ModelRelease {name} is not live in {environment} (phase {phase}): nothing to roll "
            "back; `kubectl modelgate get environments` shows what is live there"
        )
    return _request_patch(release, "rollbacks", environment, who, now, reason)


def reverify_patch(
    release: dict[str, Any],
    environment: str,
    who: str,
    now: datetime,
    reason: str | None = None,
) -> dict[str, Any]:
    """The merge patch that asks the operator to verify ``release`` in
    ``environment`` again; refused where it is not live and verified, or a
    request is pending."""
    name, entry = _environment_entry(release, environment, "reverifications", "reverifyRequest")
    phase = entry.get("phase") or "Pending"
    if phase not in VERIFIED:
        raise Refused(
            f"ModelRelease {name} is not live and verified in {environment} (phase {phase}): "
            "there is nothing to verify again yet"
        )
    if not entry.get("verificationJob"):
        raise Refused(
            f"environment {environment} does not verify what it runs (its Environment has no "
            "spec.verification): there is nothing to run again"
        )
    return _request_patch(release, "reverifications", environment, who, now, reason)


def _environment_entry(
    release: dict[str, Any], environment: str, field: str, handled: str | None
) -> tuple[str, dict[str, Any]]:
    """The release's name and its status entry for ``environment``; refused
    off the path or while a request of ``field`` is pending (``handled``: the
    status field naming the request acted on; None for a request that stands)."""
    name = _on_path(release, environment)
    promotion = (release.get("spec") or {}).get("promotion") or {}
    entries = (release.get("status") or {}).get("environments") or []
    entry: dict[str, Any] = next((e for e in entries if e.get("name") == environment), {})
    asked = [r for r in promotion.get(field) or [] if r.get("environment") == environment]
    if asked and handled is None:
        raise Refused(
            f"ModelRelease {name} already asks for this in {environment} (spec.promotion."
            f"{field}, by {asked[0].get('requestedBy') or 'someone'} at "
            f"{asked[0].get('requestedAt')}); it stands until the release is live there"
        )
    if asked and handled and asked[0].get("requestedAt") != entry.get(handled):
        raise Refused(
            f"ModelRelease {name} has a request in spec.promotion.{field} for {environment} "
            f"asked at {asked[0].get('requestedAt')} that the operator has not acted on yet: "
            f"wait for status.environments[{environment}].{handled}"
        )
    return name, entry


def _request_patch(
    release: dict[str, Any],
    field: str,
    environment: str,
    who: str,
    now: datetime,
    reason: str | None,
) -> dict[str, Any]:
    """Replace ``environment``'s entry of ``spec.promotion.<field>`` with a
    new request, keeping the other environments' entries."""
    promotion = (release.get("spec") or {}).get("promotion") or {}
    # A list entry is replaced whole: a missing reason is left out, not null.
    request = {
        "environment": environment,
        **{k: v for k, v in _request(who, now, reason).items() if v is not None},
    }
    others = [r for r in promotion.get(field) or [] if r.get("environment") != environment]
    return {
        "metadata": {"resourceVersion": (release.get("metadata") or {}).get("resourceVersion")},
        "spec": {"promotion": {field: [*others, request]}},
    }


# Where nothing is left in flight to abort.
SETTLED = {"Released": "it is released everywhere: take it out with rollback",
           "RolledBack": "it was rolled back: it goes no further anyway",
           "Failed": "its training failed: it goes no further anyway",
           "GateFailed": "its gate failed: it goes no further anyway"}  # fmt: skip


def abort_patch(
    release: dict[str, Any], who: str, now: datetime, reason: str | None = None
) -> dict[str, Any]:
    """The merge patch that stops ``release`` where it is; refused when it
    is aborted already or has nothing in flight."""
    meta = release.get("metadata") or {}
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    asked = (release.get("spec") or {}).get("abort")
    if asked:
        raise Refused(
            f"ModelRelease {name} is already aborted (by {asked.get('requestedBy') or 'someone'} "
            f"at {asked.get('requestedAt')}): `kubectl modelgate retry` lets it go on"
        )
    phase = (release.get("status") or {}).get("phase") or "Pending"
    if phase in SETTLED:
        raise Refused(f"nothing to abort in ModelRelease {name} (phase {phase}): {SETTLED[phase]}")
    request = _request(who, now, reason)
    return {
        "metadata": {"resourceVersion": meta.get("resourceVersion")},
        "spec": {"abort": request},
    }


# Where the release has gone as far as it goes in an environment.
NOT_AHEAD = {"Deployed": "it is live there already", "Analyzing": "it is live there already",
             "Superseded": "a later release replaced it there",
             "RolledBack": "it was rolled back there", "Failed": "it failed there"}  # fmt: skip


def promote_patch(
    release: dict[str, Any],
    environment: str,
    who: str,
    now: datetime,
    reason: str | None = None,
) -> dict[str, Any]:
    """The merge patch that asks the operator to promote ``release`` into
    ``environment`` without waiting for time; refused where it is there
    already or went no further, or when asked already."""
    name, entry = _environment_entry(release, environment, "promotions", None)
    phase = entry.get("phase") or "Pending"
    if phase in NOT_AHEAD:
        raise Refused(
            f"nothing to promote: ModelRelease {name} is {phase} in {environment} "
            f"({NOT_AHEAD[phase]})"
        )
    if phase in ("Deploying", "Verifying") and not entry.get("judged"):
        raise Refused(
            f"ModelRelease {name} is on its way into {environment} already (phase {phase}); "
            "nothing waits for time there"
        )
    return _request_patch(release, "promotions", environment, who, now, reason)
