"""gate.predictionsFrom Server on the real control plane: after the training
Job, the operator runs a scoring Job (its server image, run by the test node)
that starts the reference server on the trained model from the store and
scores the evaluation data through the Open Inference Protocol; the gate
judges those predictions and staging is verified against them."""

from __future__ import annotations

from collections.abc import Callable

from tests.realcluster.conftest import Team, conditions


def test_the_operator_gates_the_servers_predictions(new_team: Callable[..., Team]) -> None:
    team = new_team()
    document = team.release_document(name="credit-risk-scored")
    document["spec"]["gate"]["predictionsFrom"] = "Server"
    document["spec"]["promotion"] = {"environments": ["staging"]}
    team.create(document)
    release = team.wait_phase("credit-risk-scored", "Released", timeout=300)
    status = release["status"]
    found = conditions(release)
    assert (found["Trained"]["status"], found["Trained"]["reason"]) == ("True", "ScoredByServer")
    assert status["scoring"]["state"] == "Succeeded"
    assert status["scoring"]["jobName"].startswith("credit-risk-scored-score-")
    assert found["GatePassed"]["status"] == "True"
    assert found["Verified"]["status"] == "True"
    assert status["training"]["state"] == "Succeeded"
