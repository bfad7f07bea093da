"""The smoke run's tiny world, built offline with fixed seeds: tokenizer, judge, policy and datasets."""
