"""An edit of an Environment or a QualityGate wakes the releases that name
it, found through an index kept from the releases' watch, and no others; an
Environment is judged again when a peer or a release live in it changes."""

from __future__ import annotations

from typing import Any

from modelgate.backends.informers import ENVIRONMENTS, JOBS, MODEL_RELEASES, QUALITY_GATES
from modelgate.promotion.wakeups import (
    ENVIRONMENT,
    QUALITY_GATE,
    EnvironmentIndex,
    ReleaseIndex,
    environment_key,
    live_environments,
    references_of,
)
from tests.support.runtimes import bare_runtime


def release(
    name: str,
    environments: list[str],
    gate: str | None = "gate",
    namespace: str = "team",
    phase: str = "Released",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"promotion": {"environments": environments}}
    if gate is not None:
        spec["gate"] = {"name": gate}
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
        "status": {"phase": phase},
    }


def named(kind_namespace_name: tuple[str, str], generation: int = 1) -> dict[str, Any]:
    namespace, name = kind_namespace_name
    return {"metadata": {"name": name, "namespace": namespace, "generation": generation}}


def test_references_are_the_gate_and_the_listed_environments() -> None:
    assert references_of(release("a", ["staging", "production"])) == {
        (QUALITY_GATE, "team", "gate"),
        (ENVIRONMENT, "team", "staging"),
        (ENVIRONMENT, "team", "production"),
    }
    # Malformed specs (the API server's schema would refuse them) name nothing.
    assert references_of({"metadata": {}, "spec": {"promotion": {"environments": "x"}}}) == set()


def test_the_index_follows_edits_and_deletions_of_releases() -> None:
    index = ReleaseIndex()
    index.update(release("a", ["staging", "production"]))
    index.update(release("b", ["staging"], gate="other"))
    index.update(release("c", ["staging"], namespace="elsewhere"))
    assert index.concerned(ENVIRONMENT, "team", "staging") == {"team/a", "team/b"}
    assert index.concerned(ENVIRONMENT, "team", "production") == {"team/a"}
    assert index.concerned(QUALITY_GATE, "team", "gate") == {"team/a"}
    assert index.concerned(ENVIRONMENT, "team", "backtest") == set()

    # a no longer goes to production; b is deleted.
    index.update(release("a", ["staging"]))
    index.update(release("b", ["staging"], gate="other"), deleted=True)
    assert index.concerned(ENVIRONMENT, "team", "production") == set()
    assert index.concerned(ENVIRONMENT, "team", "staging") == {"team/a"}
    assert index.concerned(QUALITY_GATE, "team", "other") == set()
    assert len(index) == 2


def test_a_blocked_release_wakes_on_any_environment_of_its_namespace() -> None:
    index = ReleaseIndex()
    index.update(release("blocked", ["production"], phase="Blocked"))
    index.update(release("released", ["production"]))
    # Fixing the markers of an environment it does not list may unblock it.
    assert index.concerned(ENVIRONMENT, "team", "backtest") == {"team/blocked"}
    assert index.concerned(QUALITY_GATE, "team", "unrelated") == set()
    index.update(release("blocked", ["production"], phase="Released"))
    assert index.concerned(ENVIRONMENT, "team", "backtest") == set()


def test_a_spec_edit_marks_only_the_releases_that_name_it() -> None:
    rt = bare_runtime()
    for name, environments, gate in (
        ("a", ["staging", "production"], "gate"),
        ("b", ["staging"], "gate"),
        ("c", ["production"], "strict"),
    ):
        rt.changed(MODEL_RELEASES, "ADDED", release(name, environments, gate))
    # First sight of each object (the watch's listing) wakes what names it.
    rt.changed(ENVIRONMENTS, "ADDED", named(("team", "production")))
    rt.changed(QUALITY_GATES, "ADDED", named(("team", "strict")))
    assert rt.dirty == {"team/a", "team/c"}
    assert rt.take_change("uid-a", "team/a")
    assert not rt.take_change("uid-a", "team/a")  # taken
    rt.dirty.clear()

    # A status write (same generation) wakes nobody; a spec edit does.
    rt.changed(ENVIRONMENTS, "MODIFIED", named(("team", "production")))
    assert rt.dirty == set()
    rt.changed(QUALITY_GATES, "MODIFIED", named(("team", "strict"), generation=2))
    assert rt.dirty == {"team/c"}
    rt.changed(ENVIRONMENTS, "DELETED", named(("team", "staging")))
    # ... and the namespace's other Environments, whose graph lost a member.
    assert rt.dirty == {"team/a", "team/b", "team/c", "Environment:team/production"}


def test_a_job_of_a_release_marks_it_and_nothing_else() -> None:
    rt = bare_runtime()
    job = {
        "metadata": {
            "name": "train-a",
            "namespace": "team",
            "labels": {"modelgate.dev/release": "a"},
        }
    }
    rt.changed(JOBS, "MODIFIED", job)
    assert rt.dirty == {"team/a"}


def live(
    name: str, deployed: list[str], generation: int = 1, others: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A release live in ``deployed`` (and on its way to ``others``)."""
    entries = [{"name": e, "phase": "Deployed"} for e in deployed]
    entries += [{"name": e, "phase": "Verifying"} for e in others]
    return {
        "metadata": {"name": name, "namespace": "team", "generation": generation},
        "status": {"phase": "Released", "environments": entries},
    }


def test_an_environment_judges_again_when_a_peer_or_a_live_release_changes() -> None:
    index = EnvironmentIndex()
    staging, production = environment_key("team", "staging"), environment_key("team", "production")
    assert index.environment_changed(named(("team", "staging"))) == set()
    # A new peer changes the graph the others are judged in (not its own).
    assert index.environment_changed(named(("team", "production"))) == {staging}
    assert index.environment_changed(named(("other", "production"))) == set()
    assert index.environment_changed(named(("team", "staging")), deleted=True) == {production}

    # Live only where Deployed: a release still verifying is judged by its own handler.
    assert live_environments(live("m", ["staging"], others=("production",))) == {"staging"}
    assert index.release_changed(live("m", ["staging"], others=("production",))) == {staging}
    # A status write that moves nothing live wakes nobody.
    assert index.release_changed(live("m", ["staging"], others=("production",))) == set()
    # Promoted: both the one it left and the one it is live in now.
    assert index.release_changed(live("m", ["production"])) == {staging, production}
    # A spec edit (its overrides) of a live release.
    assert index.release_changed(live("m", ["production"], generation=2)) == {production}
    assert index.release_changed(live("m", ["production"], generation=2), deleted=True) == {
        production
    }
    assert index.release_changed(live("never-live", [])) == set()


def test_the_watches_wake_the_environments_an_event_concerns() -> None:
    rt = bare_runtime()
    rt.changed(ENVIRONMENTS, "ADDED", named(("team", "staging")))
    rt.changed(ENVIRONMENTS, "ADDED", named(("team", "production")))
    rt.dirty.clear()
    rt.changed(MODEL_RELEASES, "MODIFIED", live("m", ["staging"]))
    assert rt.dirty == {"Environment:team/staging"}
    rt.dirty.clear()
    # An Environment's own status write (same generation) wakes no peer.
    rt.changed(ENVIRONMENTS, "MODIFIED", named(("team", "production")))
    assert rt.dirty == set()
    rt.changed(ENVIRONMENTS, "MODIFIED", named(("team", "production"), generation=2))
    assert rt.dirty == {"Environment:team/staging"}
    # Deleted and made again, at generation 1 again: seen as a change.
    rt.dirty.clear()
    rt.changed(ENVIRONMENTS, "DELETED", named(("team", "staging")))
    assert rt.dirty == {"Environment:team/production"}
    rt.dirty.clear()
    rt.changed(ENVIRONMENTS, "ADDED", named(("team", "staging")))
    assert rt.dirty == {"Environment:team/production"}
