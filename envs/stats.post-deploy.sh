#!/usr/bin/env bash
# Run by Snakemake once, inside this conda env, right after creating it (--use-conda): installs
# the thighct package of the repository that runs the workflow (THIGHCT_REPO, exported by the
# Snakefile), editable, so jobs import thighct from the env itself and follow the repository's
# code. --no-deps: the env file pins every dependency.
set -euo pipefail
python -m pip install --quiet --no-deps --editable "${THIGHCT_REPO:?THIGHCT_REPO is set by the Snakefile}"
