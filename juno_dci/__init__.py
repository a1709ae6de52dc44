"""juno-dci status: what the policy expects where, and what is there."""
