# Stage 7: sarcopenia. Volumes adjusted by height², sarcopenia status from the SMI (never from
# CT), point-biserial correlations per sex (Fig 7 muscles, Fig 8 groups), adjusted logistic models.

SARCOPENIA = config["sarcopenia"]
SARCOPENIA_SOURCES = {
    source: f"results/volumes/{source}.tsv" for source in VOLUME_SOURCES
}
if SYNTHETIC:
    # The generator's exact volumes: what a perfect segmentation would measure.
    SARCOPENIA_SOURCES["truth"] = f"{SYNTHETIC_ROOT}/truth.tsv"
if SARCOPENIA["source"] not in SARCOPENIA_SOURCES:
    _fail(
        ThighctError(
            f"sarcopenia.source is {SARCOPENIA['source']!r}",
            fix=f"set sarcopenia.source to one of {sorted(SARCOPENIA_SOURCES)}",
        )
    )
SARCOPENIA_CORRELATION = {
    "min_n": SARCOPENIA["min_n"],
    "min_per_status": SARCOPENIA["min_per_status"],
    "confidence": SARCOPENIA["confidence"],
    "alpha": SARCOPENIA["alpha"],
    "fdr_method": SARCOPENIA["fdr_method"],
    "resamples": SARCOPENIA["bootstrap"]["resamples"],
    "method": SARCOPENIA["bootstrap"]["method"],
    "seed": SARCOPENIA["bootstrap"].get("seed") or SEED,
}


wildcard_constraints:
    source="|".join(SARCOPENIA_SOURCES),


rule adjust_volumes:
    """Volumes of the configured source joined with sex, age, height, weight and SMI;
    volume / height² (mm³/m²) per muscle and group; sarcopenia status from the SMI."""
    input:
        volumes=SARCOPENIA_SOURCES[SARCOPENIA["source"]],
        cohort="results/cohort/included.tsv",
        labels=LABELS_TSV,
    output:
        table="results/sarcopenia/adjusted_volumes.tsv",
        excluded="results/sarcopenia/excluded.tsv",
    log:
        "logs/adjust_volumes.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_of("adjust_volumes"),
        source=SARCOPENIA["source"],
        definition=SARCOPENIA["definition"],
        cutoffs=SARCOPENIA["cutoffs"],
    script:
        "../scripts/adjust_volumes.py"


rule correlate:
    """Point-biserial r of sarcopenia and each muscle's and group's adjusted volume, per sex:
    n, r, Fisher and bootstrap 95% CIs, p, Benjamini-Hochberg p within sex and family.
    """
    input:
        adjusted="results/sarcopenia/adjusted_volumes.tsv",
    output:
        muscles="results/sarcopenia/correlations_muscles.tsv",
        groups="results/sarcopenia/correlations_groups.tsv",
    log:
        "logs/correlate.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_of("correlate"),
        settings=SARCOPENIA_CORRELATION,
    script:
        "../scripts/correlate.py"


# The same analysis for any volume source side by side (e.g. predicted vs the generator's
# truth): results/sarcopenia/by_source/{source}/correlations_{muscles,groups}.tsv.
use rule adjust_volumes as adjust_volumes_by_source with:
    input:
        volumes=lambda wc: SARCOPENIA_SOURCES[wc.source],
        cohort="results/cohort/included.tsv",
        labels=LABELS_TSV,
    output:
        table="results/sarcopenia/by_source/{source}/adjusted_volumes.tsv",
        excluded="results/sarcopenia/by_source/{source}/excluded.tsv",
    log:
        "logs/adjust_volumes/{source}.log",
    params:
        code=code_of("adjust_volumes"),
        source=lambda wc: wc.source,
        definition=SARCOPENIA["definition"],
        cutoffs=SARCOPENIA["cutoffs"],


use rule correlate as correlate_by_source with:
    input:
        adjusted="results/sarcopenia/by_source/{source}/adjusted_volumes.tsv",
    output:
        muscles="results/sarcopenia/by_source/{source}/correlations_muscles.tsv",
        groups="results/sarcopenia/by_source/{source}/correlations_groups.tsv",
    log:
        "logs/correlate/{source}.log",


rule fig7_heatmap:
    """Fig 7: sarcopenia and the 27 muscles, panel A female, panel B male."""
    input:
        adjusted="results/sarcopenia/adjusted_volumes.tsv",
        correlations="results/sarcopenia/correlations_muscles.tsv",
        labels=LABELS_TSV,
    output:
        png=report(
            "results/figures/fig7_heatmap.png",
            caption="../report/fig7_heatmap.rst",
            category="7. Sarcopenia",
        ),
        pdf="results/figures/fig7_heatmap.pdf",
    log:
        "logs/fig7_heatmap.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=5,
    params:
        code=code_of("fig7_heatmap"),
        cmap=SARCOPENIA["heatmap_cmap"],
        alpha=SARCOPENIA["alpha"],
        dpi=config["plots"]["dpi"],
        source=source_description(SARCOPENIA["source"]),
    script:
        "../scripts/fig7_heatmap.py"


rule fig8_heatmap:
    """Fig 8: sarcopenia and the five muscle groups, panel A female, panel B male."""
    input:
        adjusted="results/sarcopenia/adjusted_volumes.tsv",
        correlations="results/sarcopenia/correlations_groups.tsv",
    output:
        png=report(
            "results/figures/fig8_heatmap.png",
            caption="../report/fig8_heatmap.rst",
            category="7. Sarcopenia",
        ),
        pdf="results/figures/fig8_heatmap.pdf",
    log:
        "logs/fig8_heatmap.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=5,
    params:
        code=code_of("fig8_heatmap"),
        cmap=SARCOPENIA["heatmap_cmap"],
        alpha=SARCOPENIA["alpha"],
        dpi=config["plots"]["dpi"],
        source=source_description(SARCOPENIA["source"]),
    script:
        "../scripts/fig8_heatmap.py"


rule adjusted_models:
    """Beyond the paper: logistic regression of sarcopenia on each group's adjusted volume
    (odds ratio per SD), adjusted for age and BMI, per sex."""
    input:
        adjusted="results/sarcopenia/adjusted_volumes.tsv",
    output:
        "results/sarcopenia/adjusted_models.tsv",
    log:
        "logs/adjusted_models.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_of("adjusted_models"),
        logistic=SARCOPENIA["logistic"],
        confidence=SARCOPENIA["confidence"],
    script:
        "../scripts/adjusted_models.py"


rule adjusted_models_plot:
    """Forest plot of the adjusted logistic models, one panel per sex."""
    input:
        models="results/sarcopenia/adjusted_models.tsv",
    output:
        png=report(
            "results/figures/adjusted_models.png",
            caption="../report/adjusted_models.rst",
            category="7. Sarcopenia",
        ),
        pdf="results/figures/adjusted_models.pdf",
    log:
        "logs/adjusted_models_plot.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_of("adjusted_models_plot"),
        confidence=SARCOPENIA["confidence"],
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/adjusted_models_plot.py"


# Synthetic cohort: how far each model's correlations are from those of the generator's
# exact volumes (a perfect segmentation), on the same subjects. (The first rater's labels are
# the phantoms' own labels, measured on the annotated subjects only: nothing to compare.)
TRUTH_CHECK = SYNTHETIC
TRUTH_SOURCES = list(MODELS)


rule truth_agreement:
    """Correlations from each source beside those from the generator's true volumes: r of
    each, delta_r, per source, sex, family and structure (synthetic cohort only); and the
    |delta_r| that the source's random per-subject error alone would give (its floor).
    """
    input:
        sources=expand(
            "results/sarcopenia/by_source/{source}/correlations_{family}.tsv",
            source=TRUTH_SOURCES,
            family=["muscles", "groups"],
        ),
        truth=expand(
            "results/sarcopenia/by_source/truth/correlations_{family}.tsv",
            family=["muscles", "groups"],
        ),
        adjusted=expand(
            "results/sarcopenia/by_source/{source}/adjusted_volumes.tsv",
            source=TRUTH_SOURCES,
        ),
        adjusted_truth="results/sarcopenia/by_source/truth/adjusted_volumes.tsv",
    output:
        "results/sarcopenia/truth_agreement.tsv",
    log:
        "logs/truth_agreement.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=2,
    params:
        code=code_of("truth_agreement"),
        sources=TRUTH_SOURCES,
        families=["muscles", "groups"],
        floor={
            "resamples": SARCOPENIA["bootstrap"]["resamples"],
            "seed": SARCOPENIA_CORRELATION["seed"],
        },
    script:
        "../scripts/truth_agreement.py"


rule sarcopenia_summary:
    """results/sarcopenia/summary.md: n per sex and status (vs the paper), significant
    muscles and groups per sex with r, and the adjusted models."""
    input:
        adjusted="results/sarcopenia/adjusted_volumes.tsv",
        excluded="results/sarcopenia/excluded.tsv",
        muscles="results/sarcopenia/correlations_muscles.tsv",
        groups="results/sarcopenia/correlations_groups.tsv",
        models="results/sarcopenia/adjusted_models.tsv",
        agreement=(["results/sarcopenia/truth_agreement.tsv"] if TRUTH_CHECK else []),
    output:
        "results/sarcopenia/summary.md",
    log:
        "logs/sarcopenia_summary.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=2,
    params:
        code=code_of("sarcopenia_summary"),
        source=SARCOPENIA["source"],
        definition=SARCOPENIA["definition"],
        cutoffs=SARCOPENIA["cutoffs"],
        alpha=SARCOPENIA["alpha"],
        reference=SARCOPENIA["reference"],
    script:
        "../scripts/sarcopenia_summary.py"
