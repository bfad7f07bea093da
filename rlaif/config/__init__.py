"""Recipes, rubrics and every spec, read from YAML and validated before anything starts."""
