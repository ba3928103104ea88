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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from pipelines.champion import ChampionNotScorable, rescore, score_model_file
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
    rescored: bool = False  # scored here from its TorchScript (the champion: its own evaluation used other data)


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


class GateRefused(RuntimeError):
    """The champion cannot be scored on the challenger's data and no person accepted the challenger anyway."""

    def __init__(self, message: str, champion: dict[str, Any]) -> None:
        super().__init__(message)
        self.champion = champion  # its registry version and run, for the record of the refusal


def refusal(champion_version: str, error: Exception) -> str:
    """The gate's refusal as one line: what failed and the setting that lets a person accept the challenger."""
    reason = " ".join(str(error).split())  # torch and MLflow errors span lines; the refusal must not
    reason = reason if len(reason) <= 300 else reason[:297] + "..."
    return (
        f"promotion refused: champion version {champion_version} cannot be scored on the challenger's data "
        f"({reason}); set promote.accept_unscored_champion: true in params.yaml to accept the challenger anyway"
    )


@dataclass(frozen=True)
class Comparison:
    """The champion as the gate sees it."""

    champion: Candidate | None  # its figures on the challenger's test split; None: no champion or not comparable
    recorded: Candidate | None = None  # its figures as its own run recorded them, on its own data
    unscored: str | None = None  # why it could not be scored, when promote.accept_unscored_champion accepted that


def compare_with_champion(mlflow_client: Any, params: PromoteParams, champion_version: Any | None,
                          challenger: Candidate, table: Path) -> Comparison:  # fmt: skip
    """Score the champion like the challenger; raise GateRefused when that is impossible and not accepted."""
    if champion_version is None:
        return Comparison(None)
    if champion_version.run_id == challenger.run_id:
        return Comparison(challenger, challenger)
    recorded = None
    try:
        recorded = candidate_of(mlflow_client, champion_version)
        return Comparison(champion_on_this_data(mlflow_client, params, champion_version, challenger, table), recorded)
    except ChampionNotScorable as e:
        if not params.accept_unscored_champion:
            identity = {"registry_version": str(champion_version.version), "run_id": champion_version.run_id}
            raise GateRefused(refusal(str(champion_version.version), e), identity) from e
        reason = " ".join(str(e).split())
        return Comparison(None, recorded, f"champion version {champion_version.version} cannot be scored on the "
                                          f"challenger's data ({reason})")  # fmt: skip


def scored_as_served(challenger: Candidate, model: Path, table: Path) -> Candidate:
    """The challenger scored like a re-scored champion: its exported TorchScript on the same test split."""
    macro_f1, recall = score_model_file(model, table)
    return replace(challenger, macro_f1=macro_f1, per_class_recall=recall, rescored=True)


def gate(challenger: Candidate, comparison: Comparison, params: PromoteParams) -> tuple[bool, list[str]]:
    """The decision with its reasons, saying how the champion's figures were obtained."""
    if comparison.unscored is not None:
        return True, [f"{comparison.unscored}: the challenger is accepted by promote.accept_unscored_champion"]
    promoted, reasons = decide(challenger, comparison.champion, params)
    champion, recorded = comparison.champion, comparison.recorded
    if champion is not None and recorded is not None and champion.rescored:
        reasons.insert(0, f"champion version {champion.registry_version} re-scored on the challenger's test split "
                          f"(data {champion.data_fingerprint[:12]}): macro-F1 {champion.macro_f1:.4f}; on its own "
                          f"data ({recorded.data_fingerprint[:12]}) it had {recorded.macro_f1:.4f}")  # fmt: skip
    return promoted, reasons


def _champion_json(comparison: Comparison) -> dict[str, Any] | None:
    """The champion's figures the gate used (or could not use), with those its own run recorded."""
    shown = comparison.champion or comparison.recorded
    if shown is None:
        return None
    out = asdict(shown) | {"comparable": comparison.unscored is None}
    if comparison.recorded is not None:
        out |= {"evaluated_on_fingerprint": comparison.recorded.data_fingerprint,
                "recorded_macro_f1": comparison.recorded.macro_f1}  # fmt: skip
    return out


def _record(mlflow_client: Any, params: PromoteParams, version: Any, verdict: str, reasons: list[str]) -> None:
    """The verdict as tags of the challenger's run and registry version."""
    for key, value in (("promotion", verdict), ("promotion_reasons", "; ".join(reasons))):
        mlflow_client.set_tag(version.run_id, key, value)
        mlflow_client.set_model_version_tag(params.model_name, version.version, key, value)


def register(mlflow_client: Any, params: PromoteParams, args: argparse.Namespace) -> tuple[Any, Candidate, str]:
    """The challenger's registry version (its run re-created when this store has none), its test figures and
    its checkpoint's sha256."""
    export = json.loads(args.metadata.read_text())
    evaluation = json.loads(args.evaluation.read_text())
    run_id, created = ensure_run(mlflow_client, export[CHECKPOINT_TAG], export, "promote")
    if created:
        logger.info("no MLflow run trained checkpoint %s here: re-created run %s from the tracked files",
                    export[CHECKPOINT_TAG][:12], run_id)  # fmt: skip
    complete_run(mlflow_client, run_id, evaluation, args.model)
    fingerprint = export["data_fingerprint"]
    tags = {CHECKPOINT_TAG: export[CHECKPOINT_TAG], "data_fingerprint": fingerprint}
    version = register_challenger(mlflow_client, params.model_name, run_id, tags)
    recall = {k: float(v) for k, v in evaluation["per_class_recall"].items()}
    # version.run_id: the run that registered this model first
    challenger = Candidate(str(version.version), version.run_id, float(evaluation["macro_f1"]), recall, fingerprint)
    return version, challenger, str(export[CHECKPOINT_TAG])


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
    mlflow_client = client()
    version, challenger, checkpoint = register(mlflow_client, params, args)
    champion_version = current_champion(mlflow_client, params.model_name)
    decision: dict[str, Any] = {"model_name": params.model_name,
                                "challenger": asdict(challenger) | {CHECKPOINT_TAG: checkpoint},
                                "thresholds": {"macro_f1_tolerance": params.macro_f1_tolerance,
                                               "max_recall_drop": params.max_recall_drop}}  # fmt: skip
    args.decision.parent.mkdir(parents=True, exist_ok=True)
    try:
        comparison = compare_with_champion(mlflow_client, params, champion_version, challenger, args.table)
    except GateRefused as e:  # recorded, then the stage fails: publish does not run, the champion keeps serving
        _record(mlflow_client, params, version, "refused", [str(e)])
        champion = e.champion | {"comparable": False}
        refused = decision | {"promoted": False, "refused": True, "reasons": [str(e)], "champion_before": champion}
        args.decision.write_text(json.dumps(refused, indent=2) + "\n")
        raise SystemExit(str(e)) from e
    if comparison.champion is not None and comparison.champion.rescored:  # both scored the same way
        challenger = scored_as_served(challenger, args.model, args.table)
        decision["challenger"] |= asdict(challenger) | {"evaluate_macro_f1": decision["challenger"]["macro_f1"]}
    promoted, reasons = gate(challenger, comparison, params)
    verdict = "promoted" if promoted else "rejected"
    _record(mlflow_client, params, version, verdict, reasons)
    decision |= {"promoted": promoted, "reasons": reasons, "champion_before": _champion_json(comparison)}
    args.decision.write_text(json.dumps(decision, indent=2) + "\n")
    logger.info("registry version %s %s: %s", version.version, verdict, "; ".join(reasons))


if __name__ == "__main__":
    main()
