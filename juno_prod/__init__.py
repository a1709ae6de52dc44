"""juno-prod: data-driven production (keep-up, re-production campaigns, Monte Carlo chains) on juno_jobs."""
