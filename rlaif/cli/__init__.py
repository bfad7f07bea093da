"""The `rlaif` command line: the only top layer. One module per command group; main.py assembles them."""
