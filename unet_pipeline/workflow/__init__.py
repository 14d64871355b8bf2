"""What the Snakefile parses: config values from the command line, each stage's settings split into what
shapes its output and what only shapes its run, and each job's resources. Imports `core`, `storage` and
`nn.model_config` only, and never torch (every Snakefile parse imports this).
"""
