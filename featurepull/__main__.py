"""``python -m featurepull`` runs the command line."""

from featurepull.cli import run

run()
