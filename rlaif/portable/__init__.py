"""Standard library only: the code that decides a reward, written once, used by rlaif and carried whole into the
reward Lambda that `rlaif nova export-lambda` writes (the Lambda runtime has the standard library and boto3).

Given the same judge replies, rlaif and the exported Lambda give the same rewards because they run this code.
Rules that keep that true (tests/test_layers.py and tests/test_nova.py hold them):
- a module here imports the standard library and other modules of this package, nothing else;
- the export concatenates the modules in the order of MODULES into one file, so a module may only use names
  of the modules before it, and no two modules define the same name.
"""

MODULES = ["messages", "fencing", "verdicts", "criteria", "formula", "aggregate", "checks", "verifiable", "composed",
           "lambda_response"]
