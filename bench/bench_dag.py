"""How fast the workflow plans a large cohort: `snakemake -n` on the workflow vs a bare Snakefile.

    python bench/bench_dag.py [--subjects 1000 10000] [--chunk-size N] [--keep DIR]

For each cohort size it writes a cohort table of N included subjects (every criterion passed,
a quarter annotated, each image and label a small valid NIfTI file: the workflow reads every
header while it is read, see thighct.scan_check), then times, side by side in one run:

* workflow: `snakemake -n --quiet` on the real Snakefile with that table;
* bare: `snakemake -n --quiet` on a generated Snakefile of the same shape: the same rules,
  output patterns, wildcards and input files per job (looked up in a table), `touch` bodies,
  no cohort parsing or validation;
* parse: the real workflow's parse alone (`--list-rules`), i.e. reading and validating the
  cohort table in common.smk.

Target: the workflow at most 1.25 x the bare DAG, and growth linear in N (per-job time flat).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def small_nifti_bytes(shape=(16, 16, 8)) -> tuple[bytes, bytes]:
    """A small image (int16, HU) and label map (uint8) on one grid, as .nii.gz bytes."""
    import numpy as np

    from thighct import io

    with tempfile.TemporaryDirectory() as tmp:
        affine = np.diag([2.0, 2.0, 5.0, 1.0])
        io.save_nifti(f"{tmp}/i.nii.gz", np.full(shape, -1000), affine, np.int16)
        io.save_nifti(f"{tmp}/l.nii.gz", np.zeros(shape), affine, np.uint8)
        return Path(f"{tmp}/i.nii.gz").read_bytes(), Path(f"{tmp}/l.nii.gz").read_bytes()


def write_cohort(work: Path, n: int, chunk_size: int = 0) -> Path:
    """A cohort table of n subjects who pass every criterion, each with a small NIfTI image
    (a quarter with a label map)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    criteria = config["criteria"]
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    image_bytes, label_bytes = small_nifti_bytes()
    header = ["subject_id", "sex", "age", "height_cm", "weight_kg", "smi"]
    header += [c["column"] for c in criteria if c["column"] not in header]
    header += ["image", "label", "label_rater2"]
    rows = ["\t".join(header)]
    for i in range(n):
        sid = f"S{i:06d}"
        sex = "FM"[i % 2]
        image = images / f"{sid}.nii.gz"
        image.write_bytes(image_bytes)
        label = ""
        if i % 4 == 0:
            label = str(images / f"{sid}_label.nii.gz")
            Path(label).write_bytes(label_bytes)
        values = {
            "subject_id": sid,
            "sex": sex,
            "age": str(60 + i % 30),
            "height_cm": str(150 + i % 30),
            "weight_kg": str(50 + i % 30),
            "smi": f"{5 + (i % 30) / 10:.1f}",
            "image": str(image),
            "label": label,
            "label_rater2": "",
        }
        for crit in criteria:
            values.setdefault(crit["column"], _passing(crit))
        rows.append("\t".join(values[h] for h in header))
    table = work / "cohort.tsv"
    table.write_text("\n".join(rows) + "\n")
    cfg = work / "bench.yaml"
    overrides = {"cohort": {"table": str(table)}}
    if chunk_size:
        overrides["chunk_size"] = chunk_size
    cfg.write_text(yaml.safe_dump(overrides))
    return cfg


def _passing(crit: dict) -> str:
    """A cell value for which `column op value` holds."""
    value, op = crit["value"], crit["op"]
    if isinstance(value, bool):
        return str(value if op == "==" else not value).lower()
    if op in (">", ">="):
        return str(value + 10)
    if op in ("<", "<="):
        return str(value - 10)
    return str(value)


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout + proc.stderr


def dump_shape(workdir: str, configfile: str, out: str) -> None:
    """Every job of the real DAG: rule, wildcards, input and output files (run in a subprocess)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
    )

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        wapi = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[Path(configfile)]),
            snakefile=REPO / "Snakefile",
            workdir=Path(workdir),
        )
        wapi.dag(DAGSettings(forceall=True))
        wf = wapi._workflow
        wf._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        wf._build_dag()
        rules: dict[str, dict] = {}
        for job in wf.dag.jobs:
            rule = rules.setdefault(
                job.rule.name,
                {
                    "output": [str(o) for o in job.rule.output],
                    "wildcards": sorted(job.rule.wildcard_names),
                    "jobs": {},
                },
            )
            key = "|".join(str(job.wildcards_dict[w]) for w in rule["wildcards"])
            rule["jobs"][key] = [str(f) for f in job.input]
    Path(out).write_text(json.dumps(rules))


BARE_HEADER = """\
# Bare Snakefile of the same shape as thighct's DAG (generated by bench/bench_dag.py).
import json

SHAPE = json.load(open({shape!r}))


def inputs(rule):
    wildcards = SHAPE[rule]["wildcards"]
    return lambda wc: SHAPE[rule]["jobs"]["|".join(str(wc[w]) for w in wildcards)]

"""

BARE_RULE = """
rule {name}:
    input:
        inputs({name!r}),
    output:
        {outputs}
    shell:
        "touch {{output}}"
"""


def write_bare(shape_path: Path, out: Path) -> int:
    shape = json.loads(shape_path.read_text())
    text = BARE_HEADER.format(shape=str(shape_path))
    target = shape.pop("all", None)
    if target is not None:
        text += f"\nrule all:\n    input:\n        {target['jobs']['']!r},\n"
    for name, rule in shape.items():
        outputs = "\n        ".join(f"{o!r}," for o in rule["output"])
        text += BARE_RULE.format(name=name, outputs=outputs)
    out.write_text(text)
    return sum(len(r["jobs"]) for r in shape.values()) + (target is not None)


def bench(n: int, root: Path, chunk_size: int) -> dict:
    work = root / f"n{n}_c{chunk_size}"
    work.mkdir(parents=True, exist_ok=True)
    cfg = write_cohort(work, n, chunk_size)
    real = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile", str(cfg)]
    shape = work / "shape.json"
    subprocess.run(
        [sys.executable, __file__, "--dump-shape", str(work), str(cfg), str(shape)], check=True
    )
    bare_dir = work / "bare"
    bare_dir.mkdir(exist_ok=True)
    jobs = write_bare(shape, bare_dir / "Snakefile")

    t_parse, _ = timed([*real, "--list-rules"], work)
    t_real, _ = timed([*real, "-n", "--quiet", "--forceall"], work)
    t_bare, _ = timed(
        [*SNAKEMAKE, "-s", str(bare_dir / "Snakefile"), "-n", "--quiet", "--forceall"], work
    )
    return {"subjects": n, "jobs": jobs, "parse": t_parse, "workflow": t_real, "bare": t_bare}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=0,
        help="config `chunk_size` (subjects per chunk with `chunks: auto`); 0 = the config's value",
    )
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--dump-shape", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump_shape:
        dump_shape(*args.dump_shape)
        return

    with tempfile.TemporaryDirectory(prefix="bench_dag_") as tmp:
        root = args.keep or Path(tmp)
        results = [bench(n, root, args.chunk_size) for n in args.subjects]

    chunking = f"chunk_size {args.chunk_size}" if args.chunk_size else "config chunks/chunk_size"
    print(f"snakemake -n, {chunking}")
    print(
        f"{'subjects':>9} {'jobs':>7} {'parse s':>8} {'workflow s':>11} {'bare s':>7} "
        f"{'ratio':>6} {'workflow ms/job':>16} {'bare ms/job':>12}"
    )
    for r in results:
        print(
            f"{r['subjects']:>9} {r['jobs']:>7} {r['parse']:>8.1f} {r['workflow']:>11.1f} "
            f"{r['bare']:>7.1f} {r['workflow'] / r['bare']:>6.2f} "
            f"{1000 * r['workflow'] / r['jobs']:>16.2f} {1000 * r['bare'] / r['jobs']:>12.2f}"
        )


if __name__ == "__main__":
    main()
