"""thighct: whole-thigh CT muscle segmentation and sarcopenia study library.

The library imports nothing from Snakemake; each workflow rule's script is a thin adapter
around one module here (rule ``preprocess`` -> ``workflow/scripts/preprocess.py`` ->
``thighct.preprocess``).
"""

__version__ = "0.1.0"
