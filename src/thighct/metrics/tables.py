"""The paper's Fig 5 table (metric × model by muscle) and its Markdown copy, and the header
comment that every metrics TSV carries."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from .kernel import DEFINITIONS
from .summary import SUMMARY_DEFINITIONS

# Row names of the Fig 5 table and panel titles of its figure; decimals of the Markdown copy.
METRIC_LABELS = {
    "dice": "Dice",
    "assd_mm": "ASSD (mm)",
    "hd_mm": "HD (mm)",
    "hd95_mm": "HD95 (mm)",
    "hd95_pooled_mm": "HD95 pooled (mm)",
    "ravd": "RAVD",
    "vc": "VC",
}
MARKDOWN_DECIMALS = {"HD (mm)": 2, "HD95 (mm)": 2, "HD95 pooled (mm)": 2}

FIG5_DEFINITIONS = {
    "layout": "rows: metric × model (a block of metrics per model, as in the paper's Fig 5); columns: the muscles in label-table order",
    "values": "mean over the evaluated subjects where the class is present in prediction or ground truth (NaN left out); VC is one value per muscle",
    **{k: DEFINITIONS[k] for k in ("dice", "assd_mm", "hd_mm", "hd95_mm", "ravd")},
    "vc": SUMMARY_DEFINITIONS["vc"],
}


def fig5_table(
    summaries: Mapping[str, pd.DataFrame],
    class_ids: Sequence[int],
    class_names: Mapping[int, str],
    metrics: Sequence[str],
    model_names: Mapping[str, str],
    metric_names: Mapping[str, str],
) -> pd.DataFrame:
    """The paper's Fig 5 layout: rows metric × model (model blocks), columns the classes.

    ``metrics`` are summary columns without the ``_mean`` suffix (e.g. ``dice``, ``vc``);
    values are per-class means over subjects (VC is a single value per class).
    """
    rows = []
    for model, summary in summaries.items():
        by_id = summary.set_index("class_id")
        for m in metrics:
            col = m if m in by_id.columns else f"{m}_mean"
            vals = [float(by_id[col].get(int(c), math.nan)) for c in class_ids]
            rows.append([model_names.get(model, model), metric_names.get(m, m), *vals])
    columns = ["model", "metric", *[class_names[int(c)] for c in class_ids]]
    return pd.DataFrame(rows, columns=columns)


def markdown_table(
    table: pd.DataFrame, decimals: Mapping[str, int], default_decimals: int = 3
) -> str:
    """A GitHub-flavoured Markdown table; numbers rounded per the row's ``metric``."""
    head = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(table.columns))) + "|"
    lines = [head, rule]
    for _, row in table.iterrows():
        nd = decimals.get(row["metric"], default_decimals)
        cells = [str(row["model"]), str(row["metric"])]
        # round first so that -0.0004 prints as 0.000, not -0.000
        cells += [
            "–" if pd.isna(v) else f"{round(float(v), nd) + 0.0:.{nd}f}" for v in row.iloc[2:]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_header(title: str, definitions: Mapping[str, str]) -> str:
    """Header comment lines for a TSV: the title, then one ``name: definition`` per line.

    Pass it to :func:`thighct.io_tables.write_tsv` as ``header_comment``; read the table back
    with ``pd.read_csv(path, sep="\\t", comment="#")``.
    """
    return "\n".join([title, *(f"{k}: {v}" for k, v in definitions.items())])
