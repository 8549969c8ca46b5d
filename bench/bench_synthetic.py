"""How fast the synthetic phantoms of the default cohort are made: 98 scans on N processes.

    python bench/bench_synthetic.py [--processes 2] [--config tests/config/tiny.yaml] [--limit N]

Draws the default synthetic cohort (config/config.yaml, merged with --config files), then
generates and writes (NIfTI CT + label) every included subject's phantom, in a process pool,
as the rule synthetic_scan does. Prints, side by side in one run: wall time of the whole batch,
CPU seconds per scan (generation, writing) and the voxel grid.

Target: the 98 default scans in <= 2 min on 2 cores.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

from conftest import load_config  # noqa: E402

from thighct import cohort, io, synthetic  # noqa: E402
from thighct.labels import read_labels  # noqa: E402


def _one(job):
    row, cfg, seed, cutoffs, out = job
    labels = read_labels(REPO / "config" / "labels.tsv")
    t0 = time.process_time()
    scan = synthetic.generate_subject(
        row["subject_id"],
        row["sex"],
        row["height_cm"],
        None if np.isnan(row["smi"]) else row["smi"],
        cutoffs[row["sex"]],
        cfg,
        seed,
        labels,
        weight_kg=row["weight_kg"],
    )
    t1 = time.process_time()
    io.save_nifti(Path(out) / f"{row['subject_id']}_ct.nii.gz", scan.ct, scan.affine, np.int16)
    io.save_nifti(
        Path(out) / f"{row['subject_id']}_label.nii.gz", scan.label, scan.affine, np.uint8
    )
    t2 = time.process_time()
    return t1 - t0, t2 - t1, scan.ct.size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--config", nargs="*", default=[])
    ap.add_argument("--limit", type=int, default=0, help="only the first N subjects")
    args = ap.parse_args()
    c = load_config(*args.config)
    cutoffs = c["sarcopenia"]["cutoffs"][c["sarcopenia"]["definition"]]
    table = cohort.synthetic_cohort(c["synthetic_cohort"], c["criteria"], cutoffs, c["seed"])
    included, _ = cohort.filter_cohort(
        table, c["criteria"], c["split"]["n_val"], c["split"]["folds"], c["seed"]
    )
    rows = included.to_dict("records")[: args.limit or None]
    with tempfile.TemporaryDirectory() as out:
        jobs = [(r, c["synthetic"], c["seed"], cutoffs, out) for r in rows]
        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(args.processes) as pool:
            res = pool.map(_one, jobs, chunksize=1)
        wall = time.perf_counter() - t0
    gen, write, voxels = (np.array(v) for v in zip(*res, strict=True))
    print(f"grid {c['synthetic']['spacing_mm']} mm, {len(rows)} scans, {args.processes} processes")
    print(
        f"  wall time, whole batch:   {wall:7.1f} s   (goal for 98 default scans: <= 120 s on 2 cores)"
    )
    print(f"  generation, CPU per scan: {gen.mean():7.2f} s   (max {gen.max():.2f})")
    print(f"  writing,    CPU per scan: {write.mean():7.2f} s")
    print(f"  voxels per scan:          {voxels.mean() / 1e6:7.2f} M")


if __name__ == "__main__":
    main()
