"""`python -m loadgen.cli`, as the tests and the docs run it."""

from loadgen.cli import main

if __name__ == "__main__":
    main()
