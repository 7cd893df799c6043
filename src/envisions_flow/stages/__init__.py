"""One module per workflow stage (mirroring rules/*.smk): read typed artifacts, do the work, write typed
artifacts. The Snakemake scripts are one-line calls into these functions, so every stage can also be run
(and tested) from Python."""
