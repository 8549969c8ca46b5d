"""Segmentation metrics (Dice, Hausdorff, HD95, ASSD, RAVD), their summaries, ICC and the Fig 5 table.

All label maps are integer arrays indexed ``(x, y, z)`` (nibabel voxel order) on the scan's
native grid; ``spacing_mm`` is the voxel size along those axes in mm. Distances are in mm,
volumes in mm³, RAVD is a signed fraction.

Definitions (also in docs/metrics.md and in every table's header comment):

* boundary of a mask: its voxels with at least one of the 6 face neighbours outside the mask
  (outside the volume counts as outside). This is the edge of MONAI's ``get_mask_edges``
  (``binary_erosion`` with scipy's default cross-shaped structure, XOR the mask) and of MedPy.
* ``dice`` = 2|P∩G| / (|P| + |G|)
* ``hd_mm`` = max of the two directed maximum boundary-to-boundary distances
* ``hd95_mm`` = max of the two directed 95th percentiles (MONAI / DeepMind convention)
* ``hd95_pooled_mm`` = 95th percentile of both directions' distances pooled (MedPy ``hd95``)
* ``assd_mm`` = mean of both directions' distances pooled (MONAI ``symmetric=True``)
* ``ravd`` = (|P| − |G|) / |G|, signed fraction
* a class absent from both masks: NaN everywhere; present in one only: Dice 0, NaN distances
  (a "miss"); RAVD is −1 when only the prediction is empty and NaN when the truth is empty.

The parts: :mod:`.kernel` (the per-scan metrics, numpy and scipy only), :mod:`.files`
(metrics of label-map files), :mod:`.summary` (per-class summaries), :mod:`.icc` (volume ICC;
imports pingouin when called), :mod:`.comparison` (models compared) and :mod:`.tables` (the
Fig 5 table and TSV headers). Their public names are importable from here.
"""

from .comparison import COMPARISON_DEFINITIONS, compare_models, per_subject_mean
from .files import check_same_grid, evaluate_files
from .icc import ICC_DEFINITIONS, ICC_MIN_SUBJECTS, icc_table, volume_icc
from .kernel import (
    CONFUSION_CHUNK_VOXELS,
    DEFINITIONS,
    HD_PERCENTILE,
    MAX_SHELL_OFFSETS,
    METRIC_COLUMNS,
    VOLUME_COLUMNS,
    Shells,
    boundary,
    box_with_margin,
    check_label_maps,
    confusion_matrix,
    directed_distances,
    label_boxes,
    lattice_shells,
    overlap_metrics,
    segmentation_metrics,
    surface_distance_metrics,
    union_box,
)
from .summary import (
    SUMMARY_DEFINITIONS,
    VC_MIN_SUBJECTS,
    is_miss,
    pearson_r,
    summarise_metrics,
    volume_slope,
)
from .tables import (
    FIG5_DEFINITIONS,
    MARKDOWN_DECIMALS,
    METRIC_LABELS,
    fig5_table,
    markdown_table,
    table_header,
)

__all__ = [
    "COMPARISON_DEFINITIONS",
    "CONFUSION_CHUNK_VOXELS",
    "DEFINITIONS",
    "FIG5_DEFINITIONS",
    "HD_PERCENTILE",
    "ICC_DEFINITIONS",
    "ICC_MIN_SUBJECTS",
    "MARKDOWN_DECIMALS",
    "MAX_SHELL_OFFSETS",
    "METRIC_COLUMNS",
    "METRIC_LABELS",
    "SUMMARY_DEFINITIONS",
    "VC_MIN_SUBJECTS",
    "VOLUME_COLUMNS",
    "Shells",
    "box_with_margin",
    "boundary",
    "check_label_maps",
    "check_same_grid",
    "compare_models",
    "confusion_matrix",
    "directed_distances",
    "evaluate_files",
    "fig5_table",
    "icc_table",
    "is_miss",
    "label_boxes",
    "lattice_shells",
    "markdown_table",
    "overlap_metrics",
    "pearson_r",
    "per_subject_mean",
    "segmentation_metrics",
    "summarise_metrics",
    "surface_distance_metrics",
    "table_header",
    "union_box",
    "volume_icc",
    "volume_slope",
]
