"""Promote (first step of the release stage): register the new model as the `challenger` and decide whether
it should replace the `champion`.

Gate: the challenger's test macro-F1 must be at least the champion's minus `macro_f1_tolerance`, and no class's
test recall may drop by more than `max_recall_drop`. The first model ever registered is promoted. Scores are
compared on the same data: when the champion was evaluated on other data (another data fingerprint), its
registered TorchScript model is re-scored on the challenger's test split first; when that is impossible the
gate refuses unless `promote.accept_unscored_champion` is true. The decision goes to `promotion.json` and to
MLflow tags; promote never moves the `champion` alias: publish does, once the version serves.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.champion import ChampionNotScorable, rescore
from pipelines.logs import configure_logging
from pipelines.tracking import CHECKPOINT_TAG, client, ensure_run, evaluation_metrics

logger = logging.getLogger(__name__)

CHALLENGER, CHAMPION = "challenger", "champion"


@dataclass(frozen=True)
class PromoteParams:
    model_name: str = "emotion"
    macro_f1_tolerance: float = 0.01
    max_recall_drop: float = 0.05
    accept_unscored_champion: bool = False  # a person's explicit override when the champion cannot be re-scored

    @classmethod
    def from_yaml(cls, path: Path) -> PromoteParams:
        return cls(**yaml.safe_load(path.read_text())["promote"])


@dataclass(frozen=True)
class Candidate:
    registry_version: str
    run_id: str
    macro_f1: float
    per_class_recall: dict[str, float]
    data_fingerprint: str = "unknown"
    rescored: bool = False  # scored here on the challenger's test split (its own evaluation used other data)


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


def candidate_of(mlflow_client: Any, version: Any) -> Candidate:
    """A registry version's test figures as its run recorded them."""
    run = mlflow_client.get_run(version.run_id)
    metrics = run.data.metrics
    if "test_macro_f1" not in metrics:
        raise ChampionNotScorable(f"run {version.run_id} of registry version {version.version} has no test metrics")
    recall = {k.removeprefix("test_recall_"): v for k, v in metrics.items() if k.startswith("test_recall_")}
    fingerprint = run.data.tags.get("data_fingerprint", "unknown")
    return Candidate(str(version.version), version.run_id, float(metrics["test_macro_f1"]), recall, fingerprint)


def register_challenger(mlflow_client: Any, model_name: str, run_id: str, tags: dict[str, str]) -> Any:
    """The registry version of this model, with the challenger alias: created once per trained checkpoint (a
    rerun that trains the same bytes again, e.g. `dvc repro --force`, reuses the version and its run)."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(model_name)
    except MlflowException:
        mlflow_client.create_registered_model(model_name, description="EmoTorch facial-emotion classifier")
    existing = mlflow_client.search_model_versions(
        f"name='{model_name}' and tags.{CHECKPOINT_TAG} = '{tags[CHECKPOINT_TAG]}'"
    ) or mlflow_client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    if existing:
        version = existing[0]
    else:
        source = f"{mlflow_client.get_run(run_id).info.artifact_uri}/torchscript"
        version = mlflow_client.create_model_version(model_name, source, run_id=run_id, tags=tags)
    mlflow_client.set_registered_model_alias(model_name, CHALLENGER, version.version)
    return version


def current_champion(mlflow_client: Any, model_name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def complete_run(mlflow_client: Any, run_id: str, evaluation: dict[str, Any], model: Path) -> None:
    """Give a run the test metrics and TorchScript artifact the gate and the registry need, from the tracked
    files, when it lacks them (a run re-created in a fresh clone, or one whose stages came from DVC's cache)."""
    run = mlflow_client.get_run(run_id)
    if "test_macro_f1" not in run.data.metrics:
        for key, value in evaluation_metrics(evaluation).items():
            mlflow_client.log_metric(run_id, key, value)
    if not any(a.path == "torchscript/model.pt" for a in mlflow_client.list_artifacts(run_id, "torchscript")):
        mlflow_client.log_artifact(run_id, str(model), artifact_path="torchscript")


def champion_on_this_data(mlflow_client: Any, params: PromoteParams, version: Any, challenger: Candidate,
                          table: Path) -> Candidate:  # fmt: skip
    """The champion's figures on the challenger's test split: its own when the data is the same, else re-scored."""
    recorded = candidate_of(mlflow_client, version)
    if recorded.data_fingerprint == challenger.data_fingerprint:
        return recorded
    macro_f1, recall = rescore(mlflow_client, version, table)
    return Candidate(recorded.registry_version, recorded.run_id, macro_f1, recall, challenger.data_fingerprint, True)


def _as_json(candidate: Candidate | None, recorded_fingerprint: str | None = None) -> dict[str, Any] | None:
    if candidate is None:
        return None
    out = asdict(candidate)
    if recorded_fingerprint is not None:
        out["evaluated_on_fingerprint"] = recorded_fingerprint
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--metadata", type=Path, required=True, help="export metadata JSON (checkpoint hash)")
    parser.add_argument("--evaluation", type=Path, required=True, help="eval.json (test figures)")
    parser.add_argument("--model", type=Path, required=True, help="exported TorchScript (for a re-created run)")
    parser.add_argument("--table", type=Path, required=True, help="canonical table (to re-score the champion)")
    parser.add_argument("--decision", type=Path, required=True, help="promotion.json to write")
    args = parser.parse_args(argv)
    configure_logging()
    params = PromoteParams.from_yaml(args.params)
    export = json.loads(args.metadata.read_text())
    evaluation = json.loads(args.evaluation.read_text())
    mlflow_client = client()
    run_id, created = ensure_run(mlflow_client, export[CHECKPOINT_TAG], export, "promote")
    if created:
        logger.info("no MLflow run trained checkpoint %s here: re-created run %s from the tracked files",
                    export[CHECKPOINT_TAG][:12], run_id)  # fmt: skip
    complete_run(mlflow_client, run_id, evaluation, args.model)
    fingerprint = export["data_fingerprint"]
    tags = {CHECKPOINT_TAG: export[CHECKPOINT_TAG], "data_fingerprint": fingerprint}
    version = register_challenger(mlflow_client, params.model_name, run_id, tags)
    run_id = version.run_id  # the run that registered this model first
    recall = {k: float(v) for k, v in evaluation["per_class_recall"].items()}
    challenger = Candidate(str(version.version), run_id, float(evaluation["macro_f1"]), recall, fingerprint)
    champion_version = current_champion(mlflow_client, params.model_name)
    champion, recorded_fingerprint, reasons_extra = None, None, []
    if champion_version is not None and champion_version.run_id != run_id:
        try:
            recorded_fingerprint = candidate_of(mlflow_client, champion_version).data_fingerprint
            champion = champion_on_this_data(mlflow_client, params, champion_version, challenger, args.table)
        except ChampionNotScorable as e:
            if not params.accept_unscored_champion:
                raise SystemExit(f"promotion refused: champion version {champion_version.version} cannot be scored on "
                                 f"the challenger's data ({e}); set promote.accept_unscored_champion: true in "
                                 "params.yaml to accept the challenger anyway") from e  # fmt: skip
            reasons_extra = [f"champion {champion_version.version} not comparable ({e}): accepted by "
                             "promote.accept_unscored_champion"]  # fmt: skip
    elif champion_version is not None:
        champion = challenger
    promoted, reasons = decide(challenger, champion, params)
    reasons = reasons_extra + reasons if reasons_extra else reasons
    verdict = "promoted" if promoted else "rejected"
    for key, value in (("promotion", verdict), ("promotion_reasons", "; ".join(reasons))):
        mlflow_client.set_tag(run_id, key, value)
        mlflow_client.set_model_version_tag(params.model_name, version.version, key, value)
    decision = {
        "promoted": promoted,
        "reasons": reasons,
        "model_name": params.model_name,
        "challenger": _as_json(challenger) | {CHECKPOINT_TAG: export[CHECKPOINT_TAG]},  # type: ignore[operator]
        "champion_before": _as_json(champion, recorded_fingerprint),
        "thresholds": {"macro_f1_tolerance": params.macro_f1_tolerance, "max_recall_drop": params.max_recall_drop},
    }
    args.decision.parent.mkdir(parents=True, exist_ok=True)
    args.decision.write_text(json.dumps(decision, indent=2) + "\n")
    logger.info("registry version %s %s: %s", version.version, verdict, "; ".join(reasons))


if __name__ == "__main__":
    main()
