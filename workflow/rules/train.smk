# Stage 3: training of each segmentation network (UNETR and the 3D U-Net baseline) on random
# crops of the preprocessed training scans, keeping the weights with the best validation Dice.
# A job killed at its time limit resumes from {train.checkpoint_dir}/{model}/last.pt when rerun.
# With split.folds = k, k more models per network are trained, fold k held out for validation.
# Apply mode: a model with networks.<model>.weights is imported instead of trained.

TRAIN_CFG = config["train"]
# train.epochs: one count for every model, or a count per model (the CPU-scale default gives
# the cheaper U-Net more epochs in the same time); each job sees its own count only.
EPOCHS = TRAIN_CFG["epochs"]
if isinstance(EPOCHS, dict) and set(MODELS) - set(EPOCHS):
    _fail(
        ThighctError(
            f"train.epochs gives counts for {sorted(EPOCHS)} but not for "
            f"{sorted(set(MODELS) - set(EPOCHS))}",
            fix="give every model in `models` a count under train.epochs, or one count for all",
        )
    )
if set(TRAIN_CFG.get("by_model", {})) - set(config["networks"]):
    _fail(
        ThighctError(
            f"train.by_model names {sorted(set(TRAIN_CFG['by_model']) - set(config['networks']))}, "
            f"which are not networks (networks: {sorted(config['networks'])})",
            fix="key train.by_model by the names under `networks`, or remove the entry",
        )
    )
FOLD_IDS = list(range(FOLDS))


rule train:
    """One network trained on the train split, validated on the val split (paper: 60 / 12)."""
    input:
        **train_inputs(TRAIN, VAL),
    output:
        model="results/models/{model}/model.pt",
        log="results/models/{model}/train_log.tsv",
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/train/{model}.tsv"
    wildcard_constraints:
        model=one_of(TRAINED),
    conda:
        "../../envs/segmentation.yaml"
    threads: TRAIN_CFG["threads"]
    resources:
        **partition_of(TRAIN_CFG["resources"]),
        gpu=TRAIN_CFG["resources"]["gpu"],
        # No GPU type without a GPU (the Slurm executor would ask for --gpus=a100:0).
        gpu_model=(
            TRAIN_CFG["resources"]["gpu_model"]
            if TRAIN_CFG["resources"]["gpu"]
            else ""
        ),
        # The partition only when the config names one (else the profile's default applies).
        runtime=TRAIN_CFG["resources"]["runtime"],
        mem_mb=TRAIN_CFG["resources"]["mem_mb"],
    params:
        code=code_of("train"),
        network=lambda wc: NETWORKS[wc.model],
        train=lambda wc: train_params(wc.model),
        preprocess=PREPROCESS_PARAMS,
        seed=SEED,
        subjects={"train": TRAIN, "val": VAL, "fold": None},
    script:
        "../scripts/train.py"


use rule train as train_fold with:
    input:
        unpack(fold_inputs),
    output:
        model="results/models/{model}/fold{fold}/model.pt",
        log="results/models/{model}/fold{fold}/train_log.tsv",
    log:
        "logs/train/{model}_fold{fold}.log",
    benchmark:
        "benchmarks/train/{model}_fold{fold}.tsv"
    wildcard_constraints:
        model=one_of(TRAINED),
        fold=r"\d+",
    params:
        code=code_of("train"),
        network=lambda wc: NETWORKS[wc.model],
        train=lambda wc: train_params(wc.model),
        preprocess=PREPROCESS_PARAMS,
        seed=SEED,
        subjects=fold_params,


rule import_model:
    """Apply mode: weights trained elsewhere (networks.<model>.weights), checked against this
    config and copied to where a trained model would be."""
    input:
        weights=lambda wc: WEIGHTS[wc.model],
        labels=LABELS_TSV,
    output:
        model="results/models/{model}/model.pt",
    log:
        "logs/import_model/{model}.log",
    wildcard_constraints:
        model=one_of(list(WEIGHTS)),
    conda:
        "../../envs/segmentation.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=5,
    params:
        code=code_of("import_model"),
        sha256=lambda wc: WEIGHTS_SHA256[wc.model],
        network=lambda wc: NETWORKS[wc.model],
        preprocess=PREPROCESS_PARAMS,
    script:
        "../scripts/import_model.py"


rule training_curves:
    """Training loss and validation mean Dice per epoch, one panel each, a line per model."""
    input:
        logs=expand("results/models/{model}/train_log.tsv", model=TRAINED),
    output:
        png=report(
            "results/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="3. Training",
        ),
    log:
        "logs/training_curves.log",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        code=code_of("training_curves"),
        models=TRAINED,
        losses={m: train_params(m)["loss"] for m in TRAINED},
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/training_curves.py"
