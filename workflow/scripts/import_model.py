"""Rule import_model (apply mode): a model file trained elsewhere, checked and copied."""

import shutil

from thighct import model_file
from thighct.errors import ThighctError
from thighct.io_tables import atomic_path
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    model = snakemake.wildcards.model
    weights = snakemake.input.weights
    labels = read_labels(snakemake.input.labels)
    meta = model_file.check_applicable(weights, model, labels, p.network, p.preprocess)
    with atomic_path(snakemake.output.model) as tmp:
        shutil.copyfile(weights, tmp)
        if model_file.file_sha256(tmp) != p.sha256:
            raise ThighctError(
                "the weights file changed while the workflow ran",
                path=weights,
                fix="rerun the workflow once the file is in place",
            )
    log.info(
        "%s: weights %s (sha256 %s, thighct %s, best epoch %s) copied",
        model,
        weights,
        p.sha256[:12],
        meta.get("thighct_version"),
        meta.get("best_epoch"),
    )
