"""Evaluation: sampling a policy, judging it, auditing a judge, second opinions, validation during training,
training health, and the run report."""
