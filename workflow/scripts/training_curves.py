"""Rule training_curves: loss and validation Dice per epoch of every model."""

from thighct.plots import training
from thighct.runlog import logged

LOSS_NAMES = {"dice": "Dice", "dice_ce": "Dice + CE"}

with logged(snakemake.log[0]) as log:
    paths = dict(zip(snakemake.params.models, snakemake.input.logs, strict=True))
    fig = training.training_curves(
        training.read_train_logs(paths),
        LOSS_NAMES.get(snakemake.params.loss, snakemake.params.loss),
    )
    training.save(fig, snakemake.output.png, dpi=snakemake.params.dpi)
    log.info("wrote %s", snakemake.output.png)
