"""`python -m shadowtap` runs the command line."""

from shadowtap.cli import main

if __name__ == "__main__":
    main()
