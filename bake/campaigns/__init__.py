"""Rollouts across images and services (`bake rollout`): plan which images are stale and why, bake
them parents first, swap every service that runs them, and prove what each instance runs."""
