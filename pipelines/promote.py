"""Promote stage: register the new model as the `challenger` and promote it to `champion` only if it holds up.

Gate: the challenger's test macro-F1 must be at least the champion's minus `macro_f1_tolerance`, and no class's
test recall may drop by more than `max_recall_drop`. The first model ever registered is promoted. The decision
and its reasons go to `promotion.json` and to MLflow tags on the run and the model version; only a champion
is published.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

CHALLENGER, CHAMPION = "challenger", "champion"


@dataclass(frozen=True)
class PromoteParams:
    model_name: str = "emotion"
    macro_f1_tolerance: float = 0.01
    max_recall_drop: float = 0.05

    @classmethod
    def from_yaml(cls, path: Path) -> PromoteParams:
        return cls(**yaml.safe_load(path.read_text())["promote"])


@dataclass(frozen=True)
class Candidate:
    registry_version: str
    run_id: str
    macro_f1: float
    per_class_recall: dict[str, float]


def decide(challenger: Candidate, champion: Candidate | None, params: PromoteParams) -> tuple[bool, list[str]]:
    """The promotion gate: (promoted, human-readable reasons)."""
    if champion is None:
        return True, ["first registered model: promoted without comparison"]
    if champion.run_id == challenger.run_id:
        return True, ["the challenger is already the champion"]
    reasons, promoted = [], True
    floor = champion.macro_f1 - params.macro_f1_tolerance
    if challenger.macro_f1 < floor:
        promoted = False
        reasons.append(f"macro-F1 {challenger.macro_f1:.4f} < champion {champion.macro_f1:.4f} - tolerance "
                       f"{params.macro_f1_tolerance} = {floor:.4f}")  # fmt: skip
    else:
        reasons.append(f"macro-F1 {challenger.macro_f1:.4f} >= {floor:.4f} (champion {champion.macro_f1:.4f})")
    for label, old in champion.per_class_recall.items():
        new = challenger.per_class_recall.get(label, 0.0)
        if old - new > params.max_recall_drop:
            promoted = False
            reasons.append(f"recall of {label} dropped {old - new:.4f} ({old:.4f} -> {new:.4f}) > "
                           f"{params.max_recall_drop}")  # fmt: skip
    if promoted:
        reasons.append(f"no class recall dropped by more than {params.max_recall_drop}")
    return promoted, reasons


def _candidate(client: Any, model_name: str, version: Any) -> Candidate:
    metrics = client.get_run(version.run_id).data.metrics
    recall = {k.removeprefix("test_recall_"): v for k, v in metrics.items() if k.startswith("test_recall_")}
    return Candidate(str(version.version), version.run_id, float(metrics["test_macro_f1"]), recall)


def register_challenger(client: Any, model_name: str, run_id: str) -> Any:
    """The registry version of `run_id` (created once; reruns reuse it), with the challenger alias."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="EmoTorch facial-emotion classifier (TorchScript)")
    existing = client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    if existing:
        version = existing[0]
    else:
        source = f"{client.get_run(run_id).info.artifact_uri}/torchscript"
        version = client.create_model_version(model_name, source, run_id=run_id)
    client.set_registered_model_alias(model_name, CHALLENGER, version.version)
    return version


def current_champion(client: Any, model_name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--metadata", type=Path, required=True, help="export metadata JSON (run id)")
    parser.add_argument("--decision", type=Path, required=True, help="promotion.json to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    params = PromoteParams.from_yaml(args.params)
    run_id = json.loads(args.metadata.read_text())["run_id"]
    client = MlflowClient(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    version = register_challenger(client, params.model_name, run_id)
    challenger = _candidate(client, params.model_name, version)
    champion_version = current_champion(client, params.model_name)
    champion = _candidate(client, params.model_name, champion_version) if champion_version else None
    promoted, reasons = decide(challenger, champion, params)
    if promoted:
        client.set_registered_model_alias(params.model_name, CHAMPION, version.version)
    verdict = "promoted" if promoted else "rejected"
    for set_tag in (lambda k, v: client.set_tag(run_id, k, v),
                    lambda k, v: client.set_model_version_tag(params.model_name, version.version, k, v)):  # fmt: skip
        set_tag("promotion", verdict)
        set_tag("promotion_reasons", "; ".join(reasons))
    decision = {
        "promoted": promoted,
        "reasons": reasons,
        "challenger": {"registry_version": challenger.registry_version, "run_id": challenger.run_id,
                       "macro_f1": challenger.macro_f1, "per_class_recall": challenger.per_class_recall},
        "champion_before": None if champion is None else {
            "registry_version": champion.registry_version, "run_id": champion.run_id,
            "macro_f1": champion.macro_f1, "per_class_recall": champion.per_class_recall},
        "thresholds": {"macro_f1_tolerance": params.macro_f1_tolerance, "max_recall_drop": params.max_recall_drop},
    }  # fmt: skip
    args.decision.parent.mkdir(parents=True, exist_ok=True)
    args.decision.write_text(json.dumps(decision, indent=2) + "\n")
    logger.info("registry version %s %s: %s", version.version, verdict, "; ".join(reasons))


if __name__ == "__main__":
    main()
