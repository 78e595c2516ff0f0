"""The worker process: owns the models and the device; takes jobs, runs the pipeline, stores the answers.

:mod:`.loop` takes jobs and keeps the heartbeat, :mod:`.pipeline` lists every step a batch of jobs goes through,
:mod:`.models` loads the models, :mod:`.embedded` runs a worker inside the API process (no Redis).
"""
