"""Rule train / train_fold: one network trained on the preprocessed scans (thighct.train)."""

from thighct import run_settings, train
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    params = snakemake.params
    model = snakemake.wildcards.model
    # Run settings (checkpoints, threads, ...) come from the config, not params: changing them
    # never reruns the job (thighct.run_settings).
    run = run_settings.run_only(
        "train", run_settings.train_for_model(snakemake.config["train"], model)
    )
    train_cfg = {**params.train, **run, "threads": snakemake.threads}
    subjects = params.subjects
    labels = read_labels(snakemake.input.labels)
    train_items = train.load_pairs(
        subjects["train"], snakemake.input.train_images, snakemake.input.train_labels
    )
    val_items = train.load_pairs(
        subjects["val"], snakemake.input.val_images, snakemake.input.val_labels
    )
    result = train.train_model(
        model,
        params.network,
        train_cfg,
        labels,
        train_items,
        val_items,
        seed=params.seed,
        fold=subjects["fold"],
    )
    train.write_outputs(
        result,
        snakemake.output.model,
        snakemake.output.log,
        model,
        params.network,
        train_cfg,
        labels,
        params.seed,
        params.preprocess,
    )
    log.info("%s: wrote %s", model, snakemake.output.model)
