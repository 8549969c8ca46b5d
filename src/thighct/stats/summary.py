"""The Markdown summary of the sarcopenia analysis and the subject counts per sex and status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from .adjusted import SEXES


def status_counts(adjusted: pd.DataFrame) -> pd.DataFrame:
    """Subjects per sex and status: rows F, M; columns sarcopenic, non_sarcopenic, total."""
    people = adjusted.drop_duplicates("subject")
    out = pd.DataFrame(
        index=list(SEXES), columns=["sarcopenic", "non_sarcopenic", "total"], dtype=int
    )
    for sex in SEXES:
        s = people.loc[people["sex"] == sex, "sarcopenic"]
        out.loc[sex] = [int((s == 1).sum()), int((s == 0).sum()), int(s.notna().sum())]
    return out.astype(int)


def _fmt(x: float, digits: int = 2) -> str:
    return "NA" if not np.isfinite(x) else f"{x:.{digits}f}"


def summary_markdown(
    counts: pd.DataFrame,
    correlations: Mapping[str, pd.DataFrame],
    models: pd.DataFrame | None,
    *,
    source: str,
    definition: str,
    cutoffs: Mapping[str, float],
    alpha: float,
    exclusions: Iterable[str] = (),
    reference_counts: Mapping[str, Mapping[str, int]] | None = None,
    reference_r: Mapping[str, Mapping[str, float]] | None = None,
    agreement: pd.DataFrame | None = None,
) -> str:
    """The short Markdown summary of the sarcopenia analysis.

    counts: from :func:`status_counts`. correlations: family -> correlation table. models: the
    logistic-model table (or None). reference_counts: status -> sex -> n of the paper.
    reference_r: sex -> structure -> the paper's r, printed beside ours.
    agreement: :func:`truth_agreement_table` (synthetic cohort), summarised per sex and family.
    """
    cut = ", ".join(f"{SEXES[s].lower()} < {cutoffs[s]:g}" for s in SEXES)
    lines = [
        "# Sarcopenia and thigh muscle volume",
        "",
        f"Volumes: `{source}`. Sarcopenia: {definition} (SMI kg/m²: {cut}). "
        f"Adjusted volume = volume / height² (mm³/m²). Point-biserial r (sarcopenic = 1, so r < 0 "
        f"means smaller muscles in sarcopenia); Benjamini–Hochberg FDR within each sex and family; "
        f"significant: p_fdr < {alpha:g}.",
        "",
        "## Subjects",
        "",
    ]
    header = "| sex | sarcopenic | non-sarcopenic | total |"
    if reference_counts:
        header = "| sex | sarcopenic (paper) | non-sarcopenic (paper) | total (paper) |"
    lines += [header, "|---|---|---|---|"]
    for sex in SEXES:
        c = counts.loc[sex]
        if reference_counts:
            rs = int(reference_counts.get("sarcopenic", {}).get(sex, 0))
            rn = int(reference_counts.get("non_sarcopenic", {}).get(sex, 0))
            lines.append(
                f"| {SEXES[sex]} | {c.sarcopenic} ({rs}) | {c.non_sarcopenic} ({rn}) | "
                f"{c.total} ({rs + rn}) |"
            )
        else:
            lines.append(f"| {SEXES[sex]} | {c.sarcopenic} | {c.non_sarcopenic} | {c.total} |")
    total = int(counts["total"].sum())
    ref_total = ""
    if reference_counts:
        ref_total = (
            f" (paper: {sum(int(v) for d in reference_counts.values() for v in d.values())})"
        )
    lines += ["", f"Analysed: {total}{ref_total}."]
    lines += [f"- {e}" for e in exclusions]
    for family, table in correlations.items():
        lines += ["", f"## Significant correlations: {family}", ""]
        for sex in SEXES:
            part = table[table["sex"] == sex]
            reasons = sorted(set(part["reason"].dropna()) - {""})
            sig = part[part["significant"].astype(bool)].sort_values("r")
            head = f"**{SEXES[sex]}** (n = {int(part['n'].max()) if len(part) else 0}): "
            if reasons and part["r"].isna().all():
                lines.append(head + f"not computed ({'; '.join(reasons)}).")
            elif sig.empty:
                lines.append(head + "none.")
            else:
                items = []
                for row in sig.itertuples():
                    ref = (reference_r or {}).get(sex, {}).get(row.structure)
                    ref_txt = f"; paper {ref:.2f}" if ref is not None else ""
                    items.append(
                        f"{row.display} r = {row.r:.2f} [{_fmt(row.ci_low)}, "
                        f"{_fmt(row.ci_high)}], p_fdr = {row.p_fdr:.2g}{ref_txt}"
                    )
                lines.append(head + f"{len(sig)} of {len(part)}: " + "; ".join(items) + ".")
            lines.append("")
    reference_rows = [
        (sex, structure, r_paper)
        for sex, by_structure in (reference_r or {}).items()
        for structure, r_paper in (by_structure or {}).items()
    ]
    if reference_rows:
        ours = pd.concat(list(correlations.values()), ignore_index=True).set_index(
            ["sex", "structure"]
        )
        lines += [
            "## Beside the paper",
            "",
            "| sex | structure | paper r | r [95% CI] | p_fdr |",
            "|---|---|---|---|---|",
        ]
        for sex, structure, r_paper in reference_rows:
            if (sex, structure) not in ours.index:
                continue
            row = ours.loc[(sex, structure)]
            mark = " *" if bool(row["significant"]) else ""
            lines.append(
                f"| {SEXES.get(sex, sex)} | {row['display']} | {r_paper:.2f} | {_fmt(row['r'])} "
                f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]{mark} | {_fmt(row['p_fdr'], 3)} |"
            )
        lines.append("")
    if models is not None and len(models):
        lines += [
            "## Adjusted logistic models (odds ratio of sarcopenia per SD of adjusted volume)",
            "",
        ]
        lines += [
            "| sex | structure | n | adjusted for | OR [95% CI] | p | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in models.itertuples():
            est = (
                f"{row.odds_ratio:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}]"
                if np.isfinite(row.odds_ratio)
                else f"not estimable: {row.reason}"
            )
            note = row.note if isinstance(row.note, str) else ""
            lines.append(
                f"| {SEXES.get(row.sex, row.sex)} | {row.display} | {row.n} | {row.covariates} | "
                f"{est} | {_fmt(row.p, 3)} | {note} |"
            )
        lines.append("")
    if agreement is not None and len(agreement):
        table = agreement if "source" in agreement.columns else agreement.assign(source=source)
        lines += [
            "## Agreement with the generator's true volumes (synthetic cohort)",
            "",
            "r from each source's volumes minus r from the phantoms' exact volumes "
            "(`results/sarcopenia/truth_agreement.tsv`); n: structures where both are defined. "
            "Floor: the mean abs Δr that unbiased per-subject errors of the source's own size "
            "would give on these subjects; beyond floor: structures whose abs Δr exceeds 95 % "
            "of such errors' (about 1 in 20 by chance; more means errors that follow status).",
            "",
            "| source | sex | family | n | mean abs Δr | floor | max abs Δr (structure) "
            "| beyond floor |",
            "|---|---|---|---|---|---|---|---|",
        ]
        floors = "floor_mean_abs_delta_r" in table.columns
        # Rows come ordered by truth_agreement_table (source, then sex and family).
        for (src, sex, family), part in table.groupby(["source", "sex", "family"], sort=False):
            d = part["abs_delta_r"].dropna()
            if d.empty:
                lines.append(
                    f"| {src} | {SEXES.get(sex, sex)} | {family} | 0 | NA | NA | NA | NA |"
                )
                continue
            worst = part.loc[d.idxmax(), "structure"]
            floor = _fmt(part["floor_mean_abs_delta_r"].mean(), 3) if floors else "NA"
            beyond = str(int(part["above_floor"].astype(bool).sum())) if floors else "NA"
            lines.append(
                f"| {src} | {SEXES.get(sex, sex)} | {family} | {len(d)} | {d.mean():.3f} | "
                f"{floor} | {d.max():.3f} ({worst}) | {beyond} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
