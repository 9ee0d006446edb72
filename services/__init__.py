"""Application services: the commands that the HTTP API and the CLI run."""
