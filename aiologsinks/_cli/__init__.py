"""The command-line programs: demo and receive."""
