"""Datasets in Nova's format: read, validated line by line, normalised for TRL; labelled samples for audits."""
