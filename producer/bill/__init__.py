"""The bill: what a batch (or everything since a date) cost, per tier and model, against a baseline.

`build` gathers it, from the SQL in `queries`; `report` is the per-tier summary, `quality` the measured
quality the audits give, `plot` the picture.
"""
