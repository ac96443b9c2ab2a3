"""Benchmark sweeps: every (task, fold, seed, upstream) cell through the SUPERB probe, and the table.

Modules: `cells` (what a cell is, its folder and `results.json`), `cache` (per-layer time-mean features
on disk), `fast_probe` (training the probe on the cache), `runner` (the resumable, parallel sweep;
`care-superb sweep`), `table` (aggregation and `table.md` / `table.csv`; `care-superb table`),
`plots` (bars and layer-weight heat maps).
"""
