"""`python -m optllm`: the same as the `optllm` command."""
from optllm.cli import main

if __name__ == "__main__":
    main()
