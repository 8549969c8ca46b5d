"""Rule label_tables: 3D Slicer and ITK-SNAP colour tables from config/labels.tsv."""

from thighct.io_tables import write_text
from thighct.labels import itksnap_label_description, read_labels, slicer_colour_table
from thighct.runlog import logged

with logged(snakemake.log[0]):
    labels = read_labels(snakemake.input.labels)
    write_text(slicer_colour_table(labels), snakemake.output.slicer)
    write_text(itksnap_label_description(labels), snakemake.output.itksnap)
