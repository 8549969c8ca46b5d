# Stage 1: the cohort table, the inclusion/exclusion flow (Fig 1) and the label colour tables.


if SYNTHETIC:

    rule synthetic_cohort:
        """The synthetic cohort that mirrors the paper's flow (478 -> 98 -> 72)."""
        output:
            "results/cohort/cohort.tsv",
        log:
            "logs/synthetic_cohort.log",
        conda:
            "../../envs/base.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            code=code_of("synthetic_cohort"),
            cohort=config["synthetic_cohort"],
            criteria=CRITERIA,
            cutoffs=CUTOFFS,
            split=config["split"],
            seed=SEED,
            root=SYNTHETIC_ROOT,
        script:
            "../scripts/synthetic_cohort.py"

else:

    rule cohort_table:
        """Your cohort table, validated (every problem listed at once); paths become
        has_label flags (a path may name the patient)."""
        input:
            table=COHORT_TSV,
        output:
            "results/cohort/cohort.tsv",
        log:
            "logs/cohort_table.log",
        conda:
            "../../envs/base.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            code=code_of("cohort_table"),
            criteria=CRITERIA,
        script:
            "../scripts/cohort_table.py"


rule filter_cohort:
    """Inclusion and exclusion criteria in order, then the train/val split (by sex)."""
    input:
        cohort="results/cohort/cohort.tsv",
    output:
        flow="results/cohort/flow.tsv",
        included="results/cohort/included.tsv",
    log:
        "logs/filter_cohort.log",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_of("filter_cohort"),
        criteria=CRITERIA,
        split=config["split"],
        seed=SEED,
    script:
        "../scripts/filter_cohort.py"


rule fig1_flow:
    """Fig 1: CONSORT-style flow diagram drawn from flow.tsv."""
    input:
        flow="results/cohort/flow.tsv",
        included="results/cohort/included.tsv",
    output:
        png=report(
            "results/figures/fig1_flow.png",
            caption="../report/fig1_flow.rst",
            category="1. Cohort",
        ),
        svg="results/figures/fig1_flow.svg",
    log:
        "logs/fig1_flow.log",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_of("fig1_flow"),
        dpi=config["plots"]["dpi"],
        colour=config["plots"]["flow_colour"],
    script:
        "../scripts/fig1_flow.py"


rule label_tables:
    """3D Slicer colour table and ITK-SNAP label description, so label maps open with names."""
    input:
        labels=LABELS_TSV,
    output:
        slicer="results/labels/thighct_slicer_colors.ctbl",
        itksnap="results/labels/thighct_itksnap_labels.txt",
    log:
        "logs/label_tables.log",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=2,
    params:
        code=code_of("label_tables"),
    script:
        "../scripts/label_tables.py"
