"""Rule training_curves: loss and validation Dice per epoch of every model."""

from thighct.plots import training
from thighct.runlog import logged

LOSS_NAMES = {"dice": "Dice", "dice_ce": "Dice + CE"}

with logged(snakemake.log[0]) as log:
    paths = dict(zip(snakemake.params.models, snakemake.input.logs, strict=True))
    fig = training.training_curves(
        training.read_train_logs(paths),
        {m: LOSS_NAMES.get(loss, loss) for m, loss in snakemake.params.losses.items()},
    )
    training.save(fig, snakemake.output.png, dpi=snakemake.params.dpi)
    log.info("wrote %s", snakemake.output.png)
