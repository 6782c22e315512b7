"""The promotion gate: primary metric with a tolerance, guardrails, the first model."""

from __future__ import annotations

import pytest

from newsfeed.gate import GateConfig, decide
from newsfeed.registry import RANKER, TWO_TOWER


def metrics(ndcg=0.60, auc_hide=0.70, auc_block=0.72, calibration=0.005, recall=0.20) -> dict:
    from newsfeed.schema import REACTIONS

    return {
        TWO_TOWER: {"two_tower.recall_at_500": recall},
        RANKER: {"ranker.ndcg_at_10": ndcg, "auc_hide": auc_hide, "auc_block": auc_block,
                 **{f"calibration_error_{r}": calibration for r in REACTIONS}},
    }


def test_with_no_champion_the_first_model_passes_and_says_so():
    decision = decide(metrics(), {})
    assert decision.passed and decision.first == [TWO_TOWER, RANKER] and not decision.checks
    assert "no champion yet" in decision.message()


def test_a_challenger_within_tolerance_passes():
    decision = decide(metrics(ndcg=0.597), metrics(ndcg=0.600), GateConfig(tolerance=0.005))
    assert decision.passed, decision.message()
    assert len(decision.checks) == 1 + 2 + 7 + 1  # primary, hide/block AUC, 7 calibrations, recall
    assert decision.message().startswith("gate PASSED")


def test_a_worse_primary_metric_is_rejected_with_the_shortfall():
    decision = decide(metrics(ndcg=0.55), metrics(ndcg=0.60), GateConfig(tolerance=0.005))
    assert not decision.passed
    [failure] = decision.failures
    assert failure.rule.metric == "ranker.ndcg_at_10" and failure.rule.primary
    assert failure.limit == pytest.approx(0.595)
    line = decision.message().splitlines()[1]  # failures come first
    assert "primary" in line and "ranker.ndcg_at_10 0.5500 vs champion 0.6000" in line and "FAILED by 0.0450" in line


def test_guardrails_reject_a_better_ranker_that_confuses_blocks_or_is_miscalibrated():
    decision = decide(metrics(ndcg=0.65, auc_block=0.65, calibration=0.02), metrics())
    failed = {c.rule.metric for c in decision.failures}
    assert not decision.passed
    assert "auc_block" in failed and "auc_hide" not in failed
    assert "calibration_error_click" in failed  # calibration error rose 0.015 > 0.01
    assert "ranker.ndcg_at_10" not in failed


def test_lower_calibration_error_and_higher_auc_are_improvements():
    assert decide(metrics(auc_hide=0.9, calibration=0.001), metrics()).passed


def test_retrieval_regression_is_a_guardrail_too():
    decision = decide(metrics(recall=0.15), metrics(recall=0.20))
    assert [c.rule.metric for c in decision.failures] == ["two_tower.recall_at_500"]


def test_a_model_without_a_champion_is_not_compared_but_the_other_is():
    champion = metrics()
    del champion[TWO_TOWER]
    decision = decide(metrics(recall=0.0), champion)
    assert decision.passed and decision.first == [TWO_TOWER]
    assert all(c.rule.model == RANKER for c in decision.checks)


def test_undefined_guardrails_are_skipped_and_a_missing_primary_is_an_error():
    challenger, champion = metrics(), metrics()
    del challenger[RANKER]["auc_block"]
    decision = decide(challenger, champion)
    assert decision.passed and decision.skipped == ["auc_block"]
    del challenger[RANKER]["ranker.ndcg_at_10"]
    with pytest.raises(ValueError, match="primary metric ranker.ndcg_at_10 is missing"):
        decide(challenger, champion)
    with pytest.raises(ValueError, match="challenger's metrics"):
        decide({RANKER: {}}, champion)
