"""Run plumbing: atomic files, checkpoints, logging, distributed set-up."""
