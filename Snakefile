# thighct: whole-thigh CT -> 27 muscles + femur + iliac (UNETR vs 3D U-Net) -> sarcopenia by sex.
# Kim et al., Sci Rep 2024. The rules read like the paper's Methods, in the order data flows.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

REPO = Path(workflow.basedir)
# Where the conda envs' post-deploy scripts install thighct from (--use-conda, envs/).
os.environ.update(THIGHCT_REPO=str(REPO))

# A cancelled or timed-out Slurm job must fail the run, not leave it waiting (see the module).
sys.path.insert(0, str(REPO / "workflow"))
import slurm_compat

slurm_compat.apply()


configfile: str(REPO / "config/config.yaml")


validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/synthetic.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/volumes.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/sarcopenia.smk"
include: "workflow/rules/qc.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
