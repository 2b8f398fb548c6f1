"""Batch deployments: a site's models run as scheduled jobs over the site's own files. jobs.py says
where (site.yaml's directories), ledger.py what was done (exactly once per input and model digest),
records.py how files become model inputs, runner.py one run, scheduler.py when runs start."""

__all__ = ["jobs", "ledger", "runner", "scheduler"]
