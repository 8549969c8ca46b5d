"""Rule training_curves: loss and validation Dice per epoch of every model (Fig: training)."""

from thighct.plots import training
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    logs = training.read_train_logs(dict(zip(snakemake.params.models, snakemake.input.logs, strict=True)))
    fig = training.training_curves(logs)
    training.save(fig, snakemake.output.png, dpi=snakemake.params.dpi)
    log.info("wrote %s", snakemake.output.png)
