"""Fleet triage: pensieve's triage tasks run on a Dask distributed cluster."""
