"""Data: IDX files, dataset loaders (`datasets/`) and the batch pipeline.

Import the modules themselves (`workshop.data.pipeline`, `workshop.data.idx`,
`workshop.data.datasets.image`); this package imports nothing heavy.
"""
