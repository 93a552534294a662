"""What a release says when its Job's container ran out of memory."""

from __future__ import annotations

from typing import Any

from modelgate.backends.kube import out_of_memory_hint


def _pod(container: str, limits: dict[str, str] | None) -> dict[str, Any]:
    resources = {} if limits is None else {"limits": limits}
    return {"spec": {"containers": [{"name": container, "resources": resources}]}}


def test_names_the_limit_and_the_release_field_that_raises_it() -> None:
    hint = out_of_memory_hint(_pod("trainer", {"memory": "64Mi"}), "trainer")
    assert "memory limit of 64Mi" in hint
    assert "raise spec.training.resources.limits.memory" in hint
    evaluator = out_of_memory_hint(_pod("evaluator", {"memory": "1Gi"}), "evaluator")
    assert "raise spec.evaluation.resources.limits.memory" in evaluator


def test_a_container_the_release_does_not_size_points_at_the_chart() -> None:
    hint = out_of_memory_hint(_pod("fetch", {"memory": "256Mi"}), "fetch")
    assert "256Mi" in hint
    assert "chart value workloads" in hint


def test_no_limit_means_the_node_ran_out() -> None:
    hint = out_of_memory_hint(_pod("trainer", None), "trainer")
    assert "no memory limit" in hint
    assert "spec.training.resources.limits.memory" in hint
