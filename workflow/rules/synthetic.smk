# Stage 1b: synthetic whole-thigh CT phantoms, the default study's stand-in for the hospital's
# private scans (used when config cohort.table is empty). Every included subject gets a CT and
# a label map: the labels cost nothing here and fixed outputs keep one rule per scan, while only
# the annotated subjects' cohort rows point at label.nii.gz, so nothing downstream treats the
# others as annotated. The second rater is its own rule, for the RATER2 subjects only.


if SYNTHETIC:

    # Grid, anatomy and intensity settings a scan depends on (not the figure or the 2nd rater,
    # so changing those reruns only their own rules).
    SYNTHETIC_SCAN_CFG = {
        k: v for k, v in config["synthetic"].items() if k not in ("example", "rater2")
    }

    # One job per chunk of subjects (config `chunks`, see common.smk): each job starts Python
    # and imports the imaging stack once for all its scans.
    for _chunk, _members in CHUNKS.items():

        rule:
            """Phantoms of a chunk: CT (int16 HU), 30-class label map (uint8), true volumes."""
            name:
                f"synthetic_scan_{_chunk}"
            input:
                labels=LABELS_TSV,
            output:
                ct=expand("results/synthetic/{subject}/ct.nii.gz", subject=_members),
                label=expand(
                    "results/synthetic/{subject}/label.nii.gz", subject=_members
                ),
                truth=expand("results/synthetic/{subject}/truth.tsv", subject=_members),
            log:
                f"logs/synthetic_scan/{_chunk}.log",
            benchmark:
                f"benchmarks/synthetic_scan/{_chunk}.tsv"
            conda:
                "../../envs/imaging.yaml"
            threads: 1
            resources:
                mem_mb=3000,
                runtime=2 + len(_members),
            params:
                code=code_of("synthetic_scan"),
                subjects={
                    s: synthetic_subject(SimpleNamespace(subject=s)) for s in _members
                },
                synthetic=SYNTHETIC_SCAN_CFG,
                seed=SEED,
            script:
                "../scripts/synthetic_scan.py"

    rule synthetic_rater2:
        """A second rater's label map: boundaries shifted a voxel or two, small swaps (ICC)."""
        input:
            label="results/synthetic/{subject}/label.nii.gz",
            labels=LABELS_TSV,
        output:
            "results/synthetic/{subject}/label_rater2.nii.gz",
        log:
            "logs/synthetic_rater2/{subject}.log",
        conda:
            "../../envs/imaging.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=5,
        params:
            code=code_of("synthetic_rater2"),
            rater2=config["synthetic"]["rater2"],
            seed=SEED,
        script:
            "../scripts/synthetic_rater2.py"

    rule synthetic_truth:
        """True per-subject, per-class volumes (mm³) of every generated phantom, in one table."""
        input:
            expand("results/synthetic/{subject}/truth.tsv", subject=SUBJECTS),
        output:
            "results/synthetic/truth.tsv",
        log:
            "logs/synthetic_truth/synthetic_truth.log",
        conda:
            "../../envs/imaging.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            code=code_of("synthetic_truth"),
        script:
            "../scripts/synthetic_truth.py"

    rule phantom_example:
        """Axial slices of one phantom at the hip, upper thigh and mid-thigh, CT beside labels."""
        input:
            ct=f"results/synthetic/{example_subject()}/ct.nii.gz",
            label=f"results/synthetic/{example_subject()}/label.nii.gz",
            labels=LABELS_TSV,
        output:
            png=report(
                "results/figures/phantom_example.png",
                caption="../report/phantom_example.rst",
                category="1. Cohort",
            ),
        log:
            "logs/phantom_example/phantom_example.log",
        conda:
            "../../envs/imaging.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=5,
        params:
            code=code_of("phantom_example"),
            subject=example_subject(),
            levels=config["synthetic"]["example"]["levels"],
            dpi=config["plots"]["dpi"],
        script:
            "../scripts/phantom_example.py"
