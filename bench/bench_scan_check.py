"""How long the header check of every scan takes on a large cohort, cold and from its cache.

    python bench/bench_scan_check.py [--subjects 10000] [--workers 1 2] [--no-workflow] [--markdown]

Writes a cohort table of N subjects (small valid NIfTI images, a quarter with a label map; the
table of bench/bench_dag.py), then times thighct.scan_check.check_scans on it:

* cold: no cache, every header read (the files sit in the OS page cache, just written; on a
  network file system a first read is slower);
* warm: the cache of the cold run, nothing changed (a stat per file);
* one changed: one image rewritten, so one header is read again.

Unless --no-workflow, it also times the real workflow's parse (`snakemake --list-rules`, which
reads and validates the table and runs the check) without and with the cache under
.snakemake/, so the check's share of `snakemake -n` is visible.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_dag import REPO, SNAKEMAKE, write_cohort
from benchlog import command_line, machine_line, write_section

from thighct import cohort, scan_check
from thighct.ingest import IngestSettings

CACHE = Path(".snakemake") / "thighct" / "scan_headers.json"


def rows_of(table: Path, criteria: list[dict]) -> list[dict]:
    df = cohort.validate_cohort(cohort.read_cohort(table), criteria)
    return df.to_dict("records")


def timed_check(rows, settings, cache: Path, workers: int) -> tuple[float, int]:
    started = time.perf_counter()
    summary = scan_check.check_scans(rows, settings, cache_path=cache, workers=workers)
    return time.perf_counter() - started, summary.read


def timed_parse(work: Path, cfg: Path) -> float:
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile", str(cfg), "--list-rules"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-workflow", action="store_true", help="skip the snakemake parse")
    parser.add_argument("--markdown", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args()

    import yaml

    criteria = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["criteria"]
    settings = IngestSettings()
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench_scan_check_") as tmp:
        work = Path(tmp)
        cfg = write_cohort(work, args.subjects)
        rows = rows_of(work / "cohort.tsv", criteria)
        n_files = sum(1 + bool(r["label"]) for r in rows)
        lines.append(f"{args.subjects} subjects, {n_files} NIfTI files (images and label maps)")
        lines.append("")
        lines.append("| run | workers | files read | seconds | ms per file |")
        lines.append("|---|---:|---:|---:|---:|")
        for workers in args.workers:
            cache = work / f"cache_{workers}.json"
            for run in ("cold", "warm", "one changed"):
                if run == "one changed":
                    image = Path(rows[0]["image"])
                    image.write_bytes(image.read_bytes())  # new mtime: read again
                seconds, read = timed_check(rows, settings, cache, workers)
                lines.append(
                    f"| check_scans {run} | {workers} | {read} | {seconds:.2f} | "
                    f"{1000 * seconds / n_files:.3f} |"
                )
                print(lines[-1], flush=True)
        if not args.no_workflow:
            shutil.rmtree(work / ".snakemake", ignore_errors=True)
            cold = timed_parse(work, cfg)
            assert (work / CACHE).exists(), "the workflow wrote no header cache"
            warm = timed_parse(work, cfg)
            lines.append(
                f"| snakemake --list-rules, no cache | default | {n_files} | {cold:.1f} | |"
            )
            lines.append(f"| snakemake --list-rules, cache | default | 0 | {warm:.1f} | |")
            print("\n".join(lines[-2:]), flush=True)

    body = "\n".join(lines)
    print(body)
    if args.markdown:
        path = write_section(
            "Header check of a large cohort (bench_scan_check.py)",
            command_line(),
            machine_line(),
            body,
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
