"""Rewards as TRL sees them: every reward source (the judge, a Bedrock reward Lambda) keeps one contract
(rlaif/rewards/source.py), and one adapter (rlaif/rewards/trl_adapter.py) turns any source into a TRL reward
function."""
