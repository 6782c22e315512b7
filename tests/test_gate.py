"""The promotion gate: the primary measure compared paired (or by value) with a tolerance,
guardrails, the first model."""

from __future__ import annotations

import pytest

from newsfeed.gate import GateConfig, decide
from newsfeed.registry import RANKER, TWO_TOWER


PRIMARY = "ranker.engagement_vs_oracle"


def metrics(engagement=0.60, auc_hide=0.70, auc_block=0.72, calibration=0.005, recall=0.20) -> dict:
    from newsfeed.schema import REACTIONS

    return {
        TWO_TOWER: {"two_tower.recall_at_500": recall},
        RANKER: {PRIMARY: engagement, "ranker.engagement_vs_best": engagement / 2, "auc_hide": auc_hide,
                 "auc_block": auc_block, **{f"calibration_error_{r}": calibration for r in REACTIONS}},
    }


def paired(difference: float, half_width: float) -> dict:
    return {RANKER: {PRIMARY: {"difference": difference, "low": difference - half_width,
                               "high": difference + half_width}}}


def test_with_no_champion_the_first_model_passes_and_says_so():
    decision = decide(metrics(), {})
    assert decision.passed and decision.first == [TWO_TOWER, RANKER] and not decision.checks
    assert "no champion yet" in decision.message()


def test_a_challenger_within_tolerance_passes():
    decision = decide(metrics(engagement=0.59), metrics(engagement=0.60), GateConfig(tolerance=0.02))
    assert decision.passed, decision.message()
    assert len(decision.checks) == 1 + 2 + 7 + 1  # primary, hide/block AUC, 7 calibrations, recall
    assert decision.message().startswith("gate PASSED")


def test_a_worse_primary_metric_is_rejected_with_the_shortfall():
    decision = decide(metrics(engagement=0.55), metrics(engagement=0.60), GateConfig(tolerance=0.02))
    assert not decision.passed
    [failure] = decision.failures
    assert failure.rule.metric == PRIMARY and failure.rule.primary
    assert failure.limit == pytest.approx(0.58)
    line = decision.message().splitlines()[1]  # failures come first
    assert "primary" in line and f"{PRIMARY} 0.5500 vs champion 0.6000" in line and "FAILED by 0.0300" in line


def test_paired_comparison_rejects_only_a_loss_beyond_noise_and_the_tolerance():
    config = GateConfig(tolerance=0.02)
    # Lower by value, but the interval of the paired difference reaches above -0.02: noise.
    assert decide(metrics(engagement=0.57), metrics(), config, paired(-0.03, 0.015)).passed
    # The same point values, a tight interval wholly below -0.02: worse beyond noise.
    decision = decide(metrics(engagement=0.57), metrics(), config, paired(-0.03, 0.005))
    assert not decision.passed
    line = decision.message().splitlines()[1]
    assert "paired -0.0300 [-0.0350, -0.0250]" in line and "FAILED by 0.0050" in line
    assert decision.to_dict()["checks"][0]["paired"]["high"] == pytest.approx(-0.025)


def test_without_a_world_the_primary_is_the_logged_engagement():
    challenger, champion = metrics(engagement=0.40), metrics()
    for side in (challenger, champion):
        del side[RANKER][PRIMARY]  # imported data: no simulator world, no oracle
    decision = decide(challenger, champion, GateConfig(tolerance=0.02))
    [primary] = [c for c in decision.checks if c.rule.primary]
    assert primary.rule.metric == "ranker.engagement_vs_best" and not decision.passed


def test_guardrails_reject_a_better_ranker_that_confuses_blocks_or_is_miscalibrated():
    decision = decide(metrics(engagement=0.65, auc_block=0.65, calibration=0.02), metrics())
    failed = {c.rule.metric for c in decision.failures}
    assert not decision.passed
    assert "auc_block" in failed and "auc_hide" not in failed
    assert "calibration_error_click" in failed  # calibration error rose 0.015 > 0.01
    assert PRIMARY not in failed


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
    del challenger[RANKER][PRIMARY], challenger[RANKER]["ranker.engagement_vs_best"]
    with pytest.raises(ValueError, match="primary measure .* is missing .challenger."):
        decide(challenger, champion)
    with pytest.raises(ValueError, match="challenger's metrics"):
        decide({RANKER: {}}, champion)


def test_paired_guardrails_reject_a_loss_beyond_noise_in_either_direction():
    def interval(difference, half_width):
        return {"difference": difference, "low": difference - half_width, "high": difference + half_width}

    # By value the challenger's calibration error rose 0.015 (> 0.01) and its Recall@500 fell
    # 0.03 (> 0.02), yet paired, both intervals reach back within their tolerances: noise.
    challenger, champion = metrics(calibration=0.02, recall=0.17), metrics()
    noisy = {RANKER: {"calibration_error_click": interval(0.015, 0.01)},
             TWO_TOWER: {"two_tower.recall_at_500": interval(-0.03, 0.015)}}
    decision = decide(challenger, champion, paired=noisy)
    failed = {c.rule.metric for c in decision.failures}
    assert "calibration_error_click" not in failed and "two_tower.recall_at_500" not in failed
    assert "calibration_error_like" in failed  # not paired: compared by value
    # Tight intervals: worse beyond noise. A lower-is-better check reads the interval's bottom.
    tight = {RANKER: {"calibration_error_click": interval(0.015, 0.002)},
             TWO_TOWER: {"two_tower.recall_at_500": interval(-0.03, 0.005)}}
    decision = decide(challenger, champion, paired=tight)
    by_metric = {c.rule.metric: c for c in decision.checks}
    assert not by_metric["calibration_error_click"].passed and by_metric["calibration_error_click"].limit == 0.01
    assert "the interval's bottom <= +0.01" in by_metric["calibration_error_click"].describe()
    assert not by_metric["two_tower.recall_at_500"].passed
    assert "the interval's top >= -0.02" in by_metric["two_tower.recall_at_500"].describe()
