from __future__ import annotations

import pytest

from pipelines.promote import Candidate, PromoteParams, decide, refusal

RECALL = {"angry": 0.8, "disgust": 0.5, "happy": 0.9}


def candidate(run: str, f1: float, **recall: float) -> Candidate:
    return Candidate("1", run, f1, RECALL | recall)


PARAMS = PromoteParams(macro_f1_tolerance=0.01, max_recall_drop=0.05)


@pytest.mark.parametrize(
    ("challenger", "promoted", "reason"),
    [
        (candidate("new", 0.70), True, "no class recall dropped"),
        (candidate("new", 0.695), True, ">= 0.6900"),  # within the tolerance
        (candidate("new", 0.68), False, "macro-F1 0.6800 < champion"),
        (candidate("new", 0.75, disgust=0.44), False, "recall of disgust dropped 0.0600"),
        (candidate("new", 0.75, disgust=0.46), True, "no class recall dropped"),
    ],
)
def test_gate(challenger: Candidate, promoted: bool, reason: str) -> None:
    champion = candidate("old", 0.70)
    decision, reasons = decide(challenger, champion, PARAMS)
    assert decision is promoted
    assert any(reason in r for r in reasons), reasons


def test_first_model_is_promoted() -> None:
    assert decide(candidate("new", 0.1), None, PARAMS) == (
        True,
        ["first registered model: promoted without comparison"],
    )


def test_rerun_of_the_champion_stays_champion() -> None:
    assert decide(candidate("same", 0.5), candidate("same", 0.5), PARAMS)[0] is True


def test_refusal_is_one_line_naming_the_override() -> None:
    error = RuntimeError("Expected 3 channels\nThe above operation failed in interpreter.\n  x = conv(x)\n" + "y" * 400)
    message = refusal("4", error)
    assert "\n" not in message and len(message) < 600
    assert message.startswith("promotion refused: champion version 4 cannot be scored on the challenger's data")
    assert "(Expected 3 channels The above operation" in message
    assert message.endswith("set promote.accept_unscored_champion: true in params.yaml to accept the challenger anyway")
