"""Data: ILSVRC2012 preparation, the demo dataset, statistics and the DALI pipelines."""
