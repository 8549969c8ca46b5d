"""Figures. Each module draws one topic; all share :mod:`thighct.plots.style`.

No torch or MONAI here: the figures of a finished study render in a light environment.
"""
