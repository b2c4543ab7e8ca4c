"""`python -m shadowtap` runs the command line."""

from shadowtap.cli import main

main()
