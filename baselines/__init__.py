"""Performance baselines: measurement, stored JSON baselines and their comparison.

`measure` times forwards (torch.utils.benchmark, thread CPU clock on CPU) against a calibration
workload and reads peak and live memory; `fingerprint` names the machine; `store` keeps one JSON
file of baselines per fingerprint under `data/`; `compare` holds the bands and the re-measuring;
`report` writes `--perf-report`; `plugin` wires the pytest options.
"""
