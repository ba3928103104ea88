"""Validate stage: a Great Expectations suite over the canonical table; bad data stops the pipeline here.

Expectations run on scalar columns that ingest derives per row (pixel count, min, max, std), not on the raw
pixel string: Great Expectations 1.x with pandas 3 runs regexes in RE2, which rejects `{2304}` repetition
counts and then reports a silent failure (see PLATFORM.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.data_context.types.base import ProgressBarsConfig

from pipelines.labels import LABELS, PIXELS_PER_IMAGE, SPLITS
from pipelines.logs import configure_logging
from pipelines.tables import class_counts

logger = logging.getLogger(__name__)

_MAX_EXAMPLES = 10


@dataclass(frozen=True)
class Failure:
    """One failed expectation: what it checks, how many rows broke it and a few of their row numbers."""

    expectation: str
    column: str | None
    unexpected_count: int
    example_rows: list[int] = field(default_factory=list)
    example_sources: list[str] = field(default_factory=list)
    detail: str = ""
    unit: str = "row(s)"

    def describe(self) -> str:
        where = f" on column '{self.column}'" if self.column else ""
        rows = f"; example rows: {self.example_rows} ({', '.join(self.example_sources)})" if self.example_rows else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.expectation}{where} failed for {self.unexpected_count} {self.unit}{rows}{detail}"


def build_suite() -> gx.ExpectationSuite:
    """The data contract every training table must meet."""
    suite = gx.ExpectationSuite(name="faces")
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[
                "row",
                "source",
                "split",
                "usage",
                "label",
                "source_code",
                "n_pixels",
                "pixel_min",
                "pixel_max",
                "pixel_std",
                "pixels",
                "content_hash",
                "phash",
                "duplicates_in_split",
                "phash_splits",
            ],
            exact_match=True,
        ),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=len(LABELS) - 1),
        gxe.ExpectColumnValuesToNotBeNull(column="split"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeBetween(column="n_pixels", min_value=PIXELS_PER_IMAGE, max_value=PIXELS_PER_IMAGE),
        gxe.ExpectColumnValuesToNotBeNull(column="pixel_min"),
        gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=255),
        gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=255),
        # A constant image (all one value) carries no face: std 0.
        gxe.ExpectColumnValuesToBeBetween(column="pixel_std", min_value=0, max_value=None, strict_min=True),
        # Exact duplicates inside a split inflate it; near-identical faces in two splits leak test answers.
        gxe.ExpectColumnValuesToBeBetween(column="duplicates_in_split", min_value=1, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="phash_splits", min_value=1, max_value=1),
    ]
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def validate_table(table: pd.DataFrame, docs_dir: Path | None = None) -> list[Failure]:
    """Run the suite on the canonical table; return the failures (empty when the data is valid).

    With `docs_dir`, Great Expectations data docs (HTML) of the run are written there (`index.html`).
    """
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    actions: list[Any] = []
    if docs_dir is not None:
        context.add_data_docs_site(
            "local",
            {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            },
        )
        actions.append(UpdateDataDocsAction(name="data_docs"))
    batch_definition = (
        context.data_sources.add_pandas("faces")
        .add_dataframe_asset("canonical")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(build_suite())
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="faces", data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="faces",
            validation_definitions=[definition],
            actions=actions,
            result_format={
                "result_format": "SUMMARY",
                "unexpected_index_column_names": ["row", "source"],
                "partial_unexpected_count": _MAX_EXAMPLES,
            },
        )
    )
    # The pixel bytes are not validated here (ingest derived their scalar features); keep them out of the docs.
    frame = table.drop(columns=["pixels"]).assign(pixels="")
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    (suite_result,) = result.run_results.values()
    return [_failure(r) for r in suite_result.results if not r.success] + coverage_failures(table)


def coverage_failures(table: pd.DataFrame) -> list[Failure]:
    """Every split must hold every class.

    An empty split stops training or evaluation later, and a class missing from test scores recall 0 into the
    macro-F1 that the promotion gate reads.
    """
    counts = class_counts(table)
    missing = [f"{split}/{label}" for split, per_label in counts.items() for label, n in per_label.items() if n == 0]
    if not missing:
        return []
    empty = [split for split, per_label in counts.items() if not any(per_label.values())]
    detail = (f"empty split(s): {', '.join(empty)}; " if empty else "") + f"no rows for {', '.join(missing)}"
    return [Failure("every_class_in_every_split", "label", len(missing), detail=detail, unit="split/class pair(s)")]


def _failure(r: Any) -> Failure:
    config = r.expectation_config
    column = config.kwargs.get("column")
    # GX hides errors inside the result instead of raising, either flat or keyed by metric id: surface
    # them, never treat them as passes.
    info = r.exception_info or {}
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    messages = [str(e.get("exception_message")) for e in entries if e.get("exception_message")]
    if messages:
        return Failure(config.type, column, -1, [], [], f"error: {messages[0].splitlines()[0][:300]}")
    res = r.result or {}
    index = (res.get("partial_unexpected_index_list") or [])[:_MAX_EXAMPLES]
    examples = res.get("partial_unexpected_list") or []
    detail = f"unexpected values e.g. {examples[:5]}" if examples else ""
    if config.type.startswith("expect_table"):
        detail = f"observed {res.get('observed_value')}"
    return Failure(
        config.type,
        column,
        int(res.get("unexpected_count") or 0),
        [int(i["row"]) for i in index],
        [str(i["source"]) for i in index],
        detail,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="JSON report to write")
    parser.add_argument("--docs", type=Path, default=None, help="folder for the HTML data docs (index.html)")
    args = parser.parse_args(argv)
    configure_logging()
    logging.getLogger("great_expectations").setLevel(logging.WARNING)

    table = pd.read_parquet(args.table)
    failures = validate_table(table, args.docs.resolve() if args.docs else None)
    report = {
        "success": not failures,
        "rows": len(table),
        "failures": [f.__dict__ | {"message": f.describe()} for f in failures],
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    if failures:
        for failure in failures:
            logger.error("validation: %s", failure.describe())
        logger.error("%s: %d expectation(s) failed; training will not run", args.table, len(failures))
        if args.docs:
            logger.error("data docs: %s", args.docs.resolve() / "index.html")
        sys.exit(1)
    logger.info("%s: %d rows passed every expectation", args.table, len(table))


if __name__ == "__main__":
    main()
