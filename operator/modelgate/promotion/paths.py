"""The promotion path: promotesFrom links between Environments."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from modelgate.api.environment import Environment


def graph_problems(environments: Mapping[str, Environment]) -> dict[str, str]:
    """Environment name -> what is wrong with its promotesFrom (dangling, cycle)."""
    problems: dict[str, str] = {}
    for name, env in environments.items():
        source = env.spec.promotes_from
        if source is None:
            continue
        if source == name:
            problems[name] = f"environment {name} promotes from itself; remove promotesFrom"
            continue
        if source not in environments:
            problems[name] = (
                f"environment {name} promotes from {source!r}, which does not exist; "
                "create it or fix spec.promotesFrom"
            )
            continue
        seen = [name]
        current: str | None = source
        while current is not None and current in environments:
            if current in seen:
                cycle = " -> ".join([*seen, current])
                problems[name] = f"promotesFrom forms a cycle: {cycle}; break it"
                break
            seen.append(current)
            current = environments[current].spec.promotes_from
    return problems


def path_problems(environments: Mapping[str, Environment], order: Iterable[str]) -> list[str]:
    """Why a release cannot go through ``order`` (empty when it can)."""
    order = list(order)
    graph = graph_problems(environments)
    problems = [graph[name] for name in order if name in graph]
    for index, name in enumerate(order):
        source = environments[name].spec.promotes_from
        if source is not None and source not in order[:index]:
            problems.append(
                f"environment {name} promotes from {source}: list {source} before {name} "
                "in spec.promotion.environments"
            )
    return problems
