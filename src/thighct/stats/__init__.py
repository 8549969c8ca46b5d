"""Sarcopenia statistics: height-adjusted muscle volumes, sarcopenia status from the SMI,
sex-stratified point-biserial correlations with FDR control, and adjusted logistic models.

Units: volumes in mm³, heights in cm (converted to m here), SMI in kg/m², adjusted volumes in
mm³/m² (volume / height², the paper's SMI-style adjustment). Sarcopenia is coded 1 (sarcopenic)
and 0 (not), so a negative r means sarcopenic subjects have smaller muscles.

Tables are long ("tidy"): one row per subject and structure, where a structure is a muscle
(family ``muscles``) or a muscle group (family ``groups``). Imports no torch or MONAI.

The parts: :mod:`.adjusted` (the adjusted-volume table), :mod:`.correlation` (point-biserial
correlations), :mod:`.agreement` (one source's correlations against another's),
:mod:`.logistic` (adjusted logistic models), :mod:`.summary` (the Markdown summary). Their
public names are importable from here.
"""

from ..sarcopenia import sarcopenia_status
from .adjusted import (
    ADJUSTED_COLUMNS,
    FAMILIES,
    SARCOPENIA,
    SEXES,
    Exclusions,
    adjusted_volumes,
    group_display,
    read_volume_table,
    sarcopenia_cutoffs,
    structure_order,
    structure_volumes,
    wide_by_sex,
)
from .agreement import (
    agreement_sentence,
    compare_correlations,
    precision_floor,
    truth_agreement_table,
)
from .correlation import (
    CORRELATION_COLUMNS,
    CorrelationSettings,
    bootstrap_ci,
    correlate,
    correlate_sex_family,
    correlation_matrix,
    degenerate_reason,
    fdr,
    point_biserial,
)
from .logistic import MODEL_COLUMNS, LogisticSettings, fit_logistic, logistic_models
from .summary import status_counts, summary_markdown

__all__ = [
    "ADJUSTED_COLUMNS",
    "CORRELATION_COLUMNS",
    "FAMILIES",
    "MODEL_COLUMNS",
    "SARCOPENIA",
    "SEXES",
    "CorrelationSettings",
    "Exclusions",
    "LogisticSettings",
    "adjusted_volumes",
    "agreement_sentence",
    "bootstrap_ci",
    "compare_correlations",
    "correlate",
    "correlate_sex_family",
    "correlation_matrix",
    "degenerate_reason",
    "fdr",
    "fit_logistic",
    "group_display",
    "logistic_models",
    "point_biserial",
    "precision_floor",
    "read_volume_table",
    "sarcopenia_cutoffs",
    "sarcopenia_status",
    "status_counts",
    "structure_order",
    "structure_volumes",
    "summary_markdown",
    "truth_agreement_table",
    "wide_by_sex",
]
