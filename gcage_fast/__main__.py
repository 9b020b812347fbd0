from gcage_fast.cli import cli

cli(prog_name="gcage-fast")
