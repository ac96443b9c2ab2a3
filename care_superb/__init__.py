"""Glue between this project and s3prl: registration of the CARE upstreams and the emotion tasks, and the CLI."""
