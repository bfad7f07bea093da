"""The Nova bridge: Bedrock's RFT dataset and reward-Lambda contract, both ways, and a local Bedrock judge endpoint."""
