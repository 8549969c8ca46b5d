"""Rule predict (one job per model and chunk of subjects): each scan segmented, on its own grid.

Writes one uint8 label map per subject (project class ids, the ingested image's grid and
affine) and a timing table (seconds per scan).
"""

import time

import numpy as np
import pandas as pd

from thighct import io, predict, run_settings
from thighct.io_tables import write_tsv
from thighct.labels import read_labels
from thighct.models import load_model, network_roi
from thighct.preprocess import PreprocessSettings
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    # Run settings (device, workers, the CPU fast path, ...) come from the config, not params:
    # changing them never reruns the job (thighct.run_settings).
    run = run_settings.run_only(
        "infer", run_settings.infer_for_model(snakemake.config["infer"], snakemake.params.model)
    )
    settings = predict.InferSettings.from_config({**snakemake.params.infer, **run})
    device = predict.resolve_device(settings.device)
    settings = predict.use_cpu_threads(settings, snakemake.threads, device)
    labels = read_labels(snakemake.input.labels)
    net, meta = load_model(snakemake.input.model, labels, device, net_cfg=snakemake.params.network)
    roi = network_roi(meta["network"])
    segmenter = predict.prepare_network(net, labels.n_classes, device, settings)
    predict.keep_freed_memory(segmenter)
    post = predict.PostprocessSettings.from_config(snakemake.params.postprocess)
    body = PreprocessSettings.from_config(snakemake.params.postprocess["body"])
    log.info(
        "model %s on %s, %d threads, roi %s, %s",
        snakemake.input.model,
        device,
        snakemake.threads,
        roi,
        "CPU fast path" if segmenter.fast_path else "MONAI's modules",
    )
    rows = []
    for i, subject in enumerate(snakemake.params.subjects):
        t0 = time.perf_counter()
        shape, affine = io.nifti_grid(snakemake.input.ingested[i], subject=subject)
        transform = io.load_json(snakemake.input.transforms[i])
        predict.check_native_grid(
            transform, shape, affine, subject=subject, path=snakemake.input.transforms[i]
        )
        image = io.load_nifti(snakemake.input.images[i], subject=subject).array
        pre_shape = image.shape
        t1 = time.perf_counter()
        native = predict.predict_native(image, transform, segmenter, roi, settings)
        predict.synchronise(device)
        t2 = time.perf_counter()
        del image
        # The scan's HU (read once, only now: never beside the network's windows).
        hu = io.load_nifti(snakemake.input.ingested[i], subject=subject).array
        cleared = predict.postprocess_labels(native, hu, affine, body, post)
        del hu
        io.save_nifti(snakemake.output.predictions[i], native, affine, np.uint8)
        rows.append(
            {
                "subject": subject,
                "seconds": round(time.perf_counter() - t0, 3),
                "inference_seconds": round(t2 - t1, 3),
                "windows": predict.count_windows(pre_shape, roi, settings.overlap),
                "preprocessed_shape": "x".join(map(str, pre_shape)),
                "cleared_outside_body": cleared["outside_body"],
                "cleared_small_pieces": cleared["small_pieces"],
                "device": str(device),
                "threads": snakemake.threads,
            }
        )
        log.info(
            "%s: %s voxels -> %s in %.1f s; cleared %d voxels outside the body, %d in small pieces",
            subject,
            pre_shape,
            shape,
            t2 - t1,
            cleared["outside_body"],
            cleared["small_pieces"],
        )
    write_tsv(pd.DataFrame(rows), snakemake.output.timing)
